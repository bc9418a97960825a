"""Preparation is all or nothing: a failed, killed or out-of-space run leaves
no dataset that looks prepared and keeps the old one; it resumes."""

import errno
import os
import resource
import signal
import subprocess
import sys

import pytest

from tests.data import raw_video_fixtures as fx
from vidjax.data import prepare
from vidjax.data.builders import kinetics
from vidjax.data.builders import replacement
from vidjax.errors import VidjaxError

C = fx.KINETICS_CLASSES
HEADER = 'label,youtube_id,time_start,time_end,split'
TRAIN = [(C[i % 3], f'train{i:06d}') for i in range(3)]
VAL = [(C[0], 'valid000001')]


def _write_csvs(root, train=TRAIN, val=VAL):
  for name, rows in (('train.csv', train), ('validate.csv', val)):
    with open(os.path.join(root, name), 'w') as f:
      f.write('\n'.join([HEADER] + [f'"{l}",{y},0,1,x' for l, y in rows]))


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('k'))
  for _, yid in TRAIN + VAL:
    fx.write_video(os.path.join(root, 'v', kinetics.clip_name(yid, 0, 1)
                                + '.mp4'), 12, 12)
  _write_csvs(root)
  return root


def _builder(data_dir, **kwargs):
  return prepare.make_builder('kinetics400', data_dir=str(data_dir), fps=6,
                              short_side=16, videos_per_shard=2, workers=1,
                              progress=False, **kwargs)


def _work_dir(builder):
  return os.path.join(os.fspath(builder.data_dir_root), 'downloads',
                      'vidjax_prepare', 'kinetics400',
                      builder.builder_config.name, '1.0.0')


def _full_disk_at(monkeypatch, file_name):
  """fsync fails with ENOSPC (no path, as the kernel says it) for one file."""
  real = os.fsync

  def fsync(fd):
    if file_name in os.readlink(f'/proc/self/fd/{fd}'):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real(fd)

  monkeypatch.setattr(os, 'fsync', fsync)


def _snapshot(builder):
  """What a reader of the prepared dataset sees: every file and its bytes."""
  root = os.fspath(builder.data_path)
  return {name: open(os.path.join(root, name), 'rb').read()
          for name in sorted(os.listdir(root))}


def _config_dir_entries(builder):
  return sorted(os.listdir(os.path.dirname(os.fspath(builder.data_path))))


def test_full_disk_at_the_end_leaves_no_dataset_and_resumes(
    manual_dir, tmp_path, monkeypatch):
  _full_disk_at(monkeypatch, 'manifest.csv')
  builder = _builder(tmp_path)
  with pytest.raises(VidjaxError) as e:
    prepare.prepare(builder, manual_dir=manual_dir)
  work = _work_dir(builder)
  assert str(e.value) == (
      f'kinetics400: preparation failed in {builder.data_path}: No space left '
      f'on device; the 3 finished shard(s) in {work} are kept: fix that and '
      'run the same command again to resume')
  # Nothing that looks prepared, not even TFDS's temporary directory; the
  # finished shards wait, with no partial file beside them.
  assert not _builder(tmp_path).is_prepared()
  assert _config_dir_entries(builder) == []
  assert sorted(os.listdir(work)) == sorted(
      ['plan.json'] + [f'{s}-{i:05d}-of-{n:05d}.{ext}'
                       for s, n in (('train', 2), ('validation', 1))
                       for i in range(n) for ext in ('json', 'tfrecord')])
  monkeypatch.undo()
  calls = fx.count_decodes(monkeypatch)
  builder = _builder(tmp_path)
  rows = prepare.prepare(builder, manual_dir=manual_dir)
  assert calls == []  # Resumed: every shard was finished.
  assert [r['status'] for r in rows] == ['ok'] * 4
  assert builder.num_examples('train') == 3


def test_full_disk_in_the_command_line_is_one_line(manual_dir, tmp_path):
  # A real write error: the shards outgrow RLIMIT_FSIZE, so TensorFlow's
  # TFRecord writer fails as on a full disk (EFBIG, 'File too large').
  def limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (3000, resource.RLIM_INFINITY))

  proc = subprocess.run(
      [sys.executable, '-m', 'vidjax.data.prepare', 'kinetics400',
       f'--manual_dir={manual_dir}', f'--data_dir={tmp_path}', '--workers=1',
       '--fps=6', '--short_side=16', '--videos_per_shard=2'],
      capture_output=True, text=True, preexec_fn=limit, timeout=300,
      env=dict(os.environ, PYTHONPATH=os.getcwd()), check=False)
  builder = _builder(tmp_path)
  work = _work_dir(builder)
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr
  assert proc.stderr.splitlines()[-1] == (
      f'vidjax: error: kinetics400: preparation failed in {work}: File too '
      'large; fix that and run the same command again')
  assert not builder.is_prepared()
  assert os.listdir(work) == ['plan.json']  # No partial shard left.
  prepare.prepare(builder, manual_dir=manual_dir)
  assert builder.num_examples('train') == 3


def test_overwrite_keeps_the_old_dataset_until_the_new_one_is_complete(
    manual_dir, tmp_path, monkeypatch):
  old = _builder(tmp_path)
  prepare.prepare(old, manual_dir=manual_dir)
  before = _snapshot(old)
  fixed = str(tmp_path / 'fixed')
  os.symlink(os.path.join(manual_dir, 'v'), os.path.join(
      os.makedirs(fixed) or fixed, 'v'))
  _write_csvs(fixed, train=TRAIN[:2])  # One training video fewer.

  # Without --overwrite the dataset is left as it is.
  prepare.prepare(_builder(tmp_path), manual_dir=fixed)
  assert _snapshot(old) == before
  # Killed (Ctrl-C) after one video, then out of space at the end.
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(_builder(tmp_path, interrupt_after=1), manual_dir=fixed,
                    overwrite=True)
  assert _snapshot(_builder(tmp_path)) == before
  _full_disk_at(monkeypatch, 'manifest.csv')
  with pytest.raises(VidjaxError, match='No space left on device'):
    prepare.prepare(_builder(tmp_path), manual_dir=fixed, overwrite=True)
  again = _builder(tmp_path)
  assert again.is_prepared() and again.num_examples('train') == 3
  assert _snapshot(again) == before
  assert _config_dir_entries(again) == ['1.0.0']

  monkeypatch.undo()
  calls = fx.count_decodes(monkeypatch)
  new = _builder(tmp_path)
  rows = prepare.prepare(new, manual_dir=fixed, overwrite=True)
  assert calls == []  # The interrupted re-preparation's shards resumed.
  assert len(rows) == 3 and new.num_examples('train') == 2
  assert new.class_names == tuple(sorted(C[:2]))  # Its info was re-read.
  assert _builder(tmp_path).num_examples('train') == 2
  assert _config_dir_entries(new) == ['1.0.0']
  assert not os.path.exists(tmp_path / replacement.STAGING)
  assert not os.path.exists(_work_dir(new))

  # A kill between the swap's two renames: the next builder puts the
  # dataset back.
  final = os.fspath(new.data_path)
  os.rename(final, replacement.aside_path(final))
  assert _builder(tmp_path).num_examples('train') == 2
  assert _config_dir_entries(new) == ['1.0.0']


def test_recover_finishes_or_undoes_a_swap(tmp_path):
  final = str(tmp_path / '1.0.0')
  aside = replacement.aside_path(final)
  assert aside == str(tmp_path / '.vidjax_old_1.0.0')
  os.makedirs(os.path.join(aside, 'x'))
  assert replacement.recover(final)  # Killed between the renames.
  assert os.listdir(tmp_path) == ['1.0.0']
  os.makedirs(aside)
  assert not replacement.recover(final)  # Killed before deleting the old.
  assert os.listdir(tmp_path) == ['1.0.0']
  assert os.listdir(final) == ['x']


def test_paths_that_cannot_hold_a_dataset(manual_dir, tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('')
  with pytest.raises(VidjaxError) as e:
    _builder(a_file)
  assert str(e.value) == f'--data_dir {a_file} is a file, not a directory'
  with pytest.raises(VidjaxError) as e:
    prepare.prepare(_builder(tmp_path), manual_dir=manual_dir,
                    download_dir=str(a_file))
  assert str(e.value) == f'--download_dir {a_file} is a file, not a directory'
  # A version directory without TFDS's files (a partial copy, say) would be
  # taken for a prepared dataset and fail when read.
  builder = _builder(tmp_path / 'd')
  os.makedirs(builder.data_path / 'junk')
  with pytest.raises(VidjaxError) as e:
    prepare.prepare(builder, manual_dir=manual_dir)
  assert str(e.value) == (
      f'{builder.data_path} exists but holds no complete dataset (no '
      'dataset_info.json and features.json); move it away or prepare again '
      'with --overwrite')
