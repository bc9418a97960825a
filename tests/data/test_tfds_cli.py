"""`tfds build` on vidjax's builders: the TFDS command line, end to end.

TFDS's CLI imports apache_beam and mlcroissant at start-up; the test
environment has them (pyproject's `tfds_cli` extra).
"""
import csv
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.data import raw_video_fixtures as fixtures

MISSING = [m for m in ('apache_beam', 'mlcroissant')
           if importlib.util.find_spec(m) is None]


@pytest.mark.skipif(bool(MISSING), reason=f'tfds build needs {MISSING} '
                    "(pip install 'vidjax[tfds_cli]')")
def test_tfds_build_prepares_kinetics(tmp_path):
  raw = tmp_path / 'raw'
  train_rows = []
  for i, label in enumerate(['air drumming', 'abseiling', 'air drumming']):
    youtube_id = f'clip{i:07d}'
    fixtures.write_video(str(raw / 'train' / f'{youtube_id}_000000_000002.mp4'),
                         num_frames=20, fps=10)
    train_rows.append([label, youtube_id, 0, 2, 'train'])
  fixtures.write_video(str(raw / 'val' / 'valclip0000_000000_000002.mp4'),
                       num_frames=20, fps=10)
  fixtures.write_kinetics_csv(str(raw / 'train.csv'), train_rows)
  fixtures.write_kinetics_csv(
      str(raw / 'validate.csv'),
      [['abseiling', 'valclip0000', 0, 2, 'validate']])
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2',
             PYTHONPATH=os.pathsep.join(filter(None, [
                 os.getcwd(), os.environ.get('PYTHONPATH')])))
  proc = subprocess.run(
      [sys.executable, '-m', 'tensorflow_datasets.scripts.cli.main', 'build',
       'kinetics400', '--imports=vidjax.data.builders',
       f'--manual_dir={raw}', f'--data_dir={tmp_path / "tfds"}'],
      env=env, capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]

  version_dir, = glob.glob(str(tmp_path / 'tfds' / 'kinetics400' / 'default'
                               / '*'))
  labels = {}
  for split, count in (('train', 3), ('validation', 1)):
    records = fixtures.read_records(glob.glob(
        os.path.join(version_dir, f'kinetics400-{split}.tfrecord-*')))
    assert len(records) == count
    labels.update({r['text']: r['label'] for r in records})
  # The sorted label map of train.csv, the same in both splits.
  assert labels == {'abseiling': 0, 'air drumming': 1}
  with open(os.path.join(version_dir, 'manifest.csv'), encoding='utf-8',
            newline='') as f:
    assert [row['status'] for row in csv.DictReader(f)] == ['ok'] * 4
