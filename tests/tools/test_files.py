"""vidjax.tools.files: outputs checked before the work, replaced whole.

Faults are simulated (root ignores permission bits): a monkeypatched
os.open raising the errno, or a missing directory.
"""
import errno
import os
import subprocess
import sys

import pytest

from vidjax.errors import VidjaxError
from vidjax.tools import files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def fail_with(monkeypatch, code):
  def refuse(path, *args, **kwargs):
    raise OSError(code, os.strerror(code), path)
  monkeypatch.setattr(files.os, 'open', refuse)


def test_write_replaces_the_file_whole(tmp_path):
  path = tmp_path / 'report.json'
  path.write_text('old')
  files.write_text(str(path), 'new')
  assert path.read_text() == 'new'
  assert os.listdir(tmp_path) == ['report.json']
  mask = os.umask(0)
  os.umask(mask)
  assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
  path = tmp_path / 'report.json'
  path.write_text('old')
  real_fsync = os.fsync

  def full(fd):  # The data is written; making it durable fails.
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(files.os, 'fsync', full)
  with pytest.raises(VidjaxError) as error:
    files.write_text(str(path), 'new' * 1000)
  monkeypatch.setattr(files.os, 'fsync', real_fsync)
  assert str(error.value) == (f'cannot write {path}: No space left on '
                              'device')
  assert path.read_text() == 'old'
  assert os.listdir(tmp_path) == ['report.json']


@pytest.mark.parametrize('code', [errno.EROFS, errno.EACCES, errno.ENOSPC])
def test_unwritable_place_is_found_before_the_work(tmp_path, monkeypatch,
                                                   code):
  fail_with(monkeypatch, code)
  path = tmp_path / 'aot.json'
  with pytest.raises(VidjaxError) as error:
    files.check_writable(str(path), 'json')
  assert str(error.value) == (f'cannot write --json={path}: '
                              f'{os.strerror(code)} ({tmp_path})')


def test_directory_or_missing_directory(tmp_path):
  with pytest.raises(VidjaxError) as error:
    files.check_writable(str(tmp_path), 'hlo')
  assert str(error.value) == f'--hlo={tmp_path} is a directory; give a file path'
  missing = tmp_path / 'no' / 'aot.json'
  with pytest.raises(VidjaxError) as error:
    files.check_writable(str(missing), 'json')
  assert str(error.value) == (f'cannot write --json={missing}: No such file '
                              f'or directory ({tmp_path}/no)')
  assert files.check_writable(str(tmp_path / 'a.json'), 'json') == str(
      tmp_path / 'a.json')
  assert os.listdir(tmp_path) == []


def test_aot_checks_its_outputs_before_compiling(tmp_path):
  # A missing directory: refused before the topology (libtpu) or the
  # compile, so this needs neither.
  missing = tmp_path / 'no' / 'aot.json'
  env = dict(os.environ, PYTHONPATH=REPO)
  proc = subprocess.run(
      [sys.executable, '-m', 'vidjax.tools.aot', '--config=configs/demo.py',
       '--topology=v5e:2x2', f'--json={missing}'], cwd=REPO, env=env,
      capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.splitlines() == [
      f'vidjax: error: cannot write --json={missing}: No such file or '
      f'directory ({tmp_path}/no)'], proc.stderr
  assert proc.stdout == ''
