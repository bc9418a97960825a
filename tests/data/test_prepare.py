"""`python -m vidjax.data.prepare`: resume after interruption, parallel
workers, the manifest summary, one-line errors."""

import json
import os
import subprocess
import sys

import pytest

from tests.data import raw_video_fixtures as fx
from vidjax.data import prepare
from vidjax.data.builders import kinetics
from vidjax.errors import VidjaxError

C = fx.KINETICS_CLASSES
NUM_TRAIN = 8


def _make(root):
  train = []
  for i in range(NUM_TRAIN):
    yid = f'train{i:06d}'
    train.append((C[i % len(C)], yid, 0, 1, 'train'))
    if i != 3:  # One missing.
      fx.write_video(os.path.join(root, 'train',
                                  kinetics.clip_name(yid, 0, 1) + '.mp4'),
                     12, 12)
  fx.write_kinetics_csv(os.path.join(root, 'train.csv'), train)
  fx.write_kinetics_csv(os.path.join(root, 'validate.csv'),
                        [(C[0], 'valid000001', 0, 1, 'validate')])
  fx.write_video(os.path.join(root, 'val', 'valid000001_000000_000001.mp4'),
                 12, 12)


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('k'))
  _make(root)
  return root


def _builder(data_dir, **kwargs):
  return prepare.make_builder('kinetics400', data_dir=str(data_dir), fps=6,
                              short_side=16, videos_per_shard=2,
                              progress=False, **kwargs)


def _work_dir(builder, data_dir):
  return os.path.join(str(data_dir), 'downloads', 'vidjax_prepare',
                      'kinetics400', builder.builder_config.name, '1.0.0')


def _finished_shards(builder, data_dir):
  """{shard file: (inode, [videos decoded into it])} of an interrupted run."""
  work = _work_dir(builder, data_dir)
  out = {}
  for name in os.listdir(work):
    if name.endswith('.tfrecord'):
      with open(os.path.join(work, name[:-len('.tfrecord')] + '.json')) as f:
        rows = json.load(f)
      out[name] = (os.stat(os.path.join(work, name)).st_ino,
                   {os.path.basename(r['video']) for r in rows
                    if r['status'] == 'ok'})
  return out


PRESENT = {f'train{i:06d}_000000_000001.mp4' for i in range(NUM_TRAIN)
           if i != 3} | {'valid000001_000000_000001.mp4'}


def _resume_and_check(builder, tmp_path, manual_dir, monkeypatch):
  finished = _finished_shards(builder, tmp_path)
  assert finished
  done_before = set().union(*(v for _, v in finished.values()))
  calls = fx.count_decodes(monkeypatch)
  rows = prepare.prepare(builder, manual_dir=manual_dir)
  # Exactly the videos of unfinished shards were decoded again.
  assert sorted(calls) == sorted(PRESENT - done_before)
  # The finished shards went into the dataset as they were (hard links).
  final = {os.stat(p).st_ino for s in builder.split_names
           for p in builder.split_files(s)}
  assert {ino for ino, _ in finished.values()} <= final
  assert sum(r['status'] == 'ok' for r in rows) == len(PRESENT)
  assert builder.num_examples('train') == NUM_TRAIN - 1
  return calls


def test_interrupted_run_resumes_without_redoing_finished_shards(
    manual_dir, tmp_path, monkeypatch):
  # 4 train shards of 2 videos and 1 validation shard; a Ctrl-C after 5
  # videos leaves 2 finished shards and a partial third.
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(_builder(tmp_path, workers=1, interrupt_after=5),
                    manual_dir=manual_dir)
  builder = _builder(tmp_path, workers=1)
  assert not builder.is_prepared()
  assert len(_finished_shards(builder, tmp_path)) == 2
  calls = _resume_and_check(builder, tmp_path, manual_dir, monkeypatch)
  assert builder.converted_this_run == 5
  # The work directory is gone after success; a rerun is a no-op.
  assert not os.path.exists(os.path.join(str(tmp_path), 'downloads',
                                         'vidjax_prepare', 'kinetics400'))
  n = len(calls)
  prepare.prepare(_builder(tmp_path, workers=1), manual_dir=manual_dir)
  assert len(calls) == n


def test_parallel_workers_interrupted_then_resumed(manual_dir, tmp_path,
                                                   monkeypatch):
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(_builder(tmp_path, workers=2, interrupt_after=3),
                    manual_dir=manual_dir)
  builder = _builder(tmp_path, workers=1)
  assert 1 <= len(_finished_shards(builder, tmp_path)) < 5
  _resume_and_check(builder, tmp_path, manual_dir, monkeypatch)
  # Same records as a run without interruption.
  clean = _builder(tmp_path / 'clean', workers=1)
  prepare.prepare(clean, manual_dir=manual_dir)
  for split in ('train', 'validation'):
    got = sorted((r['filename'], r['frames'].tobytes())
                 for r in fx.read_records(builder.split_files(split)))
    want = sorted((r['filename'], r['frames'].tobytes())
                  for r in fx.read_records(clean.split_files(split)))
    assert got == want


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=os.getcwd())
  return subprocess.run(
      [sys.executable, '-m', 'vidjax.data.prepare', *args],
      capture_output=True, text=True, env=env, timeout=300, check=False)


def test_cli_prints_counts(manual_dir, tmp_path):
  proc = _cli('kinetics400', f'--manual_dir={manual_dir}',
              f'--data_dir={tmp_path}', '--workers=1', '--fps=6',
              '--short_side=16', '--videos_per_shard=3')
  assert proc.returncode == 0, proc.stderr
  assert 'train: 8 videos: 7 ok, 1 missing, 0 undecodable; 3 shard(s)' in (
      proc.stdout)
  assert 'validation: 1 videos: 1 ok, 0 missing, 0 undecodable' in proc.stdout
  assert "config.data.name = 'kinetics400/fps6_short16_q90'" in proc.stdout
  assert 'videos/s' in proc.stderr  # The progress line.


def test_cli_error_is_one_line(tmp_path):
  empty = tmp_path / 'empty'
  empty.mkdir()
  proc = _cli('kinetics400', f'--manual_dir={empty}', f'--data_dir={tmp_path}')
  assert proc.returncode == 1
  assert proc.stderr.strip() == (
      f'vidjax: error: manual_dir {empty} is empty; it should hold the '
      'kinetics400 annotation files and videos (see docs/datasets.md)')


@pytest.mark.parametrize('kwargs,message', [
    (dict(dataset='kinetics999'), 'unknown dataset .kinetics999.'),
    (dict(fps='fast'), '--fps must be a number'),
    (dict(short_side=-1), '--short_side must be >= 0'),
    (dict(jpeg_quality=0), '--jpeg_quality must be in 1..100'),
])
def test_bad_settings(kwargs, message, tmp_path):
  kwargs = dict(dict(dataset='ssv2', data_dir=str(tmp_path)), **kwargs)
  with pytest.raises(VidjaxError, match=message):
    prepare.make_builder(kwargs.pop('dataset'), **kwargs)


def test_settings_name_the_config():
  assert prepare.make_builder('ssv2').builder_config.name == 'default'
  b = prepare.make_builder('kinetics700', fps='native', short_side=0)
  assert b.builder_config.name == 'fpsnative_shortorig_q90'
  assert (b.builder_config.fps, b.builder_config.short_side) == (None, None)


def test_worker_serialization_equals_formats_writer():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vidjax.data import formats  # pylint: disable=g-import-not-at-top
  from vidjax.data import video_worker  # pylint: disable=g-import-not-at-top

  for label, start in ((7, 1_500_000), (-1, None)):
    fields = dict(encoded_frames=[b'\xff\xd8a', b'', b'c' * 300], label=label,
                  label_text='tying knot (not on a tie) "é"',
                  filename='train/x y/a_000001_000011.mp4',
                  start_timestamp_us=start,
                  end_timestamp_us=None if start is None else 11_500_000)
    mine = tf.train.SequenceExample.FromString(
        video_worker.sequence_example_bytes(**fields))
    assert mine == formats.make_sequence_example(**fields)
