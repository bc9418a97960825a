"""A conversion's output is replaced all at once or not at all.

Full disks are simulated two ways: `OSError(ENOSPC)` raised by a
monkeypatched write in the middle of `save_converted` (after the weights,
before vidjax_model.json), and, for the command line, a subprocess under
RLIMIT_FSIZE with SIGXFSZ ignored, where tensorstore's own writes fail with
EFBIG ('File too large').
"""
import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vidjax import VidjaxError
from vidjax import convert
from vidjax.convert import output

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
ENOSPC_TEXT = os.strerror(errno.ENOSPC)


def tiny_variables(seed):
  rng = np.random.default_rng(seed)
  return {'params': {'dense': {'kernel': rng.standard_normal(
      (4, 3)).astype(np.float32), 'bias': np.full(3, seed, np.float32)}}}


def snapshot(directory):
  """{relative path: bytes} of every file below `directory`."""
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, directory)] = f.read()
  return files


@pytest.fixture(name='old')
def old_conversion(tmp_path):
  """An existing conversion at tmp_path/out and its files' bytes."""
  out = convert.save_converted(str(tmp_path / 'out'), 'tsm_r18', 3,
                               tiny_variables(1))
  return out, snapshot(out)


def restored_bias(out):
  return convert.restore_converted(out)[2]['params']['dense']['bias']


def test_overwrite_replaces_the_whole_conversion(old, tmp_path):
  out, before = old
  convert.save_converted(out, 's3d_torchvision', 7, tiny_variables(2),
                         overwrite=True)
  name, classes, _ = convert.restore_converted(out)
  assert (name, classes) == ('s3d_torchvision', 7)
  np.testing.assert_array_equal(restored_bias(out), np.full(3, 2.0))
  assert snapshot(out) != before
  # Neither the new one's temporary nor the old one set aside is left.
  assert os.listdir(tmp_path) == ['out']
  assert oct(os.stat(out).st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


def test_full_disk_mid_write_keeps_the_old_conversion(old, tmp_path,
                                                      monkeypatch):
  out, before = old
  written = []

  def full_disk(*args, **kwargs):
    # The weights are on disk by now; vidjax_model.json is being written.
    written.append(os.listdir(next(tmp_path.glob('.out.tmp-*'))))
    raise OSError(errno.ENOSPC, ENOSPC_TEXT)

  monkeypatch.setattr(convert.json, 'dump', full_disk)
  with pytest.raises(VidjaxError) as error:
    convert.save_converted(out, 'tsm_r18', 3, tiny_variables(2),
                           overwrite=True)
  assert written and 'variables' in written[0]
  assert str(error.value) == (f'cannot write {out}: {ENOSPC_TEXT}; the '
                              'conversion there is unchanged')
  assert snapshot(out) == before
  assert os.listdir(tmp_path) == ['out']
  np.testing.assert_array_equal(restored_bias(out), np.full(3, 1.0))


def test_failed_swap_puts_the_old_conversion_back(old, tmp_path,
                                                  monkeypatch):
  out, before = old
  real_replace = os.replace
  calls = []

  failing = 0

  def replace(source, target):
    calls.append((source, target))
    if len(calls) == failing:
      raise OSError(errno.EROFS, os.strerror(errno.EROFS), target)
    return real_replace(source, target)

  monkeypatch.setattr(output.os, 'replace', replace)
  # 1: the old one aside fails; 2: it is aside, the new one in fails.
  for failing in (1, 2):
    calls.clear()
    with pytest.raises(VidjaxError, match=f'cannot write {out}: '
                       f'{os.strerror(errno.EROFS)}; the conversion there'):
      convert.save_converted(out, 'tsm_r18', 3, tiny_variables(2),
                             overwrite=True)
    assert len(calls) == failing + (failing == 2)  # And back.
    assert snapshot(out) == before
    assert os.listdir(tmp_path) == ['out']


def test_unwritable_parent_is_one_error(tmp_path, monkeypatch):
  # Root ignores permission bits: the refusal is simulated.
  def denied(*args, **kwargs):
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES),
                          str(tmp_path))

  monkeypatch.setattr(output.os, 'mkdir', denied)
  out = str(tmp_path / 'out')
  with pytest.raises(VidjaxError) as error:
    convert.save_converted(out, 'tsm_r18', 3, tiny_variables(1))
  assert str(error.value) == f'cannot write {out}: Permission denied'
  assert not os.path.exists(out)


def test_existing_conversion_needs_overwrite(old):
  out, before = old
  with pytest.raises(VidjaxError) as error:
    convert.save_converted(out, 'tsm_r18', 3, tiny_variables(2))
  assert str(error.value) == (f'the output {out} already holds a conversion '
                              '(pass --overwrite to replace it)')
  assert snapshot(out) == before


@pytest.mark.parametrize('overwrite', [False, True])
def test_never_replaces_a_directory_that_is_not_a_conversion(tmp_path,
                                                             overwrite):
  out = tmp_path / 'models'
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  (out / 'variables').mkdir()
  with pytest.raises(VidjaxError) as error:
    convert.save_converted(str(out), 'tsm_r18', 3, tiny_variables(1),
                           overwrite=overwrite)
  assert str(error.value) == (
      f'the output {out} holds files that are not a vidjax conversion '
      '(notes.txt); a conversion never deletes what it did not write: give '
      '--out a new or empty directory')
  assert sorted(os.listdir(out)) == ['notes.txt', 'variables']
  assert (out / 'notes.txt').read_text() == 'mine'


@pytest.mark.parametrize('overwrite', [False, True])
def test_output_that_is_a_file_is_refused(tmp_path, overwrite):
  out = tmp_path / 'weights.pth'
  out.write_bytes(b'torch')
  with pytest.raises(VidjaxError) as error:
    convert.save_converted(str(out), 'tsm_r18', 3, tiny_variables(1),
                           overwrite=overwrite)
  assert str(error.value) == (
      f'the output {out} exists and is not a directory; give --out a '
      'directory path (it is created)')
  assert out.read_bytes() == b'torch'


def test_symbolic_link_is_refused(old, tmp_path):
  out, before = old
  link = tmp_path / 'link'
  link.symlink_to(out)
  with pytest.raises(VidjaxError) as error:
    convert.save_converted(str(link), 'tsm_r18', 3, tiny_variables(2),
                           overwrite=True)
  assert str(error.value) == (f'the output {link} is a symbolic link; give '
                              '--out the directory it points to')
  assert os.readlink(link) == out
  assert snapshot(out) == before


def test_empty_directory_is_filled(tmp_path):
  out = tmp_path / 'out'
  out.mkdir()
  convert.save_converted(str(out), 'tsm_r18', 3, tiny_variables(4))
  np.testing.assert_array_equal(restored_bias(str(out)), np.full(3, 4.0))
  assert os.listdir(tmp_path) == ['out']


def test_output_must_not_hold_or_sit_in_the_source(tmp_path):
  source = tmp_path / 'hf'
  source.mkdir()
  (source / 'model.safetensors').write_bytes(b'')
  with pytest.raises(VidjaxError, match=r'--out=.*/hf is the source --torch; '
                     'write the conversion elsewhere'):
    output.check_paths(str(source), str(source))
  with pytest.raises(VidjaxError, match='is inside the source directory'):
    output.check_paths(str(source), str(source / 'vidjax'))
  with pytest.raises(VidjaxError, match=r'--out=.*/hf holds the source '
                     r'--torch=.*/hf/model.safetensors; write the conversion '
                     'elsewhere'):
    output.check_paths(str(source / 'model.safetensors'), str(source))
  output.check_paths(str(source / 'model.safetensors'),
                           str(tmp_path / 'out'))


def test_restore_reports_missing_weights(old):
  out, _ = old
  os.rename(os.path.join(out, 'variables'), os.path.join(out, 'elsewhere'))
  with pytest.raises(VidjaxError, match=f'not a converted vidjax checkpoint: '
                     f'{out}/variables'):
    convert.restore_converted(out)


# ------------------------------------------------------------ Command line.

# The command line under a file-size limit: set in the child itself, as a
# fork of this (multithreaded) process must not run Python code.
_LIMITED = """import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill.
resource.setrlimit(resource.RLIMIT_FSIZE, ({0}, {0}))
sys.argv[0] = 'vidjax.convert'
runpy.run_module('vidjax.convert', run_name='__main__', alter_sys=True)
"""


def run_cli(*args, file_size_limit=None):
  command = (['-c', _LIMITED.format(file_size_limit)] if file_size_limit
             else ['-m', 'vidjax.convert'])
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, *command, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)


def test_cli_full_disk_keeps_the_old_conversion(old, tmp_path):
  pytest.importorskip('transformers', reason='the tiny TimeSformer reference '
                      'model is built with transformers')
  # pylint: disable=g-import-not-at-top
  from tests.convert.test_timesformer import hf_timesformer
  from tests.convert.test_timesformer import save_hf
  out, before = old
  source = save_hf(hf_timesformer(), tmp_path / 'hf')
  # ~600 kB of random weights: no file of them fits in 64 kB.
  proc = run_cli('--model=timesformer', f'--torch={source}', f'--out={out}',
                 '--overwrite', file_size_limit=64 * 1024)
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.splitlines() == [
      f'vidjax: error: cannot write {out}: File too large; the conversion '
      'there is unchanged'], proc.stderr
  assert snapshot(out) == before
  assert sorted(os.listdir(tmp_path)) == ['hf', 'out']


def test_cli_refuses_an_existing_output_before_converting(old, tmp_path):
  out, before = old
  # No such source: the output is checked first, before anything is read.
  proc = run_cli('--model=tsm_r18', f'--torch={tmp_path}/none.pth',
                 f'--out={out}')
  assert proc.returncode == 1
  assert proc.stderr.splitlines() == [
      f'vidjax: error: the output {out} already holds a conversion (pass '
      '--overwrite to replace it)'], proc.stderr
  assert snapshot(out) == before
  assert json.loads(open(os.path.join(out, 'vidjax_model.json')).read())[
      'model'] == 'tsm_r18'
