"""launch/tpu_vm.py ships git HEAD: what a run reads must be in it, as here.

Each test builds a small git repository of its own and points the launcher
at it (tpu_vm.ROOT), so this checkout's state never matters. Dry runs and
real runs (a fake runner) check alike, before any command runs.
"""
import shutil
import subprocess

import pytest

from tests.launch.test_tpu_vm import BASE
from tests.launch.test_tpu_vm import FakeRunner
from tests.launch.test_tpu_vm import SLICE
from tests.launch.test_tpu_vm import error_line
from tests.launch.test_tpu_vm import launch
from tests.launch.test_tpu_vm import tpu_vm

pytestmark = pytest.mark.skipif(shutil.which('git') is None,
                                reason='the launcher ships with git')
UP = ['up', *BASE, *SLICE, '--bucket=gs://bkt']
RUN = ['run', *BASE, '--bucket=gs://bkt']


def git(repo, *args):
  subprocess.run(['git', '-c', 'user.name=t', '-c', 'user.email=t@t', *args],
                 cwd=repo, check=True, capture_output=True)


@pytest.fixture(name='repo')
def repository(tmp_path, monkeypatch):
  """A committed checkout: configs/exp.py imports configs/base.py."""
  repo = tmp_path / 'repo'
  (repo / 'configs').mkdir(parents=True)
  (repo / 'configs' / 'base.py').write_text('def make():\n  return {}\n')
  (repo / 'configs' / 'exp.py').write_text(
      'from configs import base\n\ndef get_config():\n  return base.make()\n')
  (repo / 'labels.txt').write_text('a\nb\n')
  (repo / 'README.md').write_text('readme\n')
  (repo / '.gitignore').write_text('workdirs/\n')
  git(repo, 'init', '-q')
  git(repo, 'add', '-A')
  git(repo, 'commit', '-q', '-m', 'start')
  monkeypatch.setattr(tpu_vm, 'ROOT', str(repo))
  return repo


def refused(capsys, *argv):
  """The one error line of a dry run and of a real run, which must agree;
  neither runs a command."""
  lines = []
  for extra in (['--dry-run'], []):
    runner = FakeRunner()
    assert launch(runner, *argv[:1], *extra, *argv[1:]) == 1
    assert runner.commands == []
    lines.append(error_line(capsys))
  assert lines[0] == lines[1]
  return lines[0]


def test_committed_config_and_its_imports_ship(repo, capsys):
  runner = FakeRunner()
  assert launch(runner, *UP, '--config=configs/exp.py') == 0
  assert runner.commands[1][:2] == ['git', 'archive']
  assert capsys.readouterr().err.count('vidjax: error') == 0


def test_untracked_config(repo, capsys):
  (repo / 'configs' / 'new.py').write_text('def get_config(): return {}\n')
  assert refused(capsys, *UP, '--config=configs/new.py') == (
      'vidjax: error: the config file configs/new.py is untracked: git '
      'archive HEAD does not ship it; commit it')


def test_modified_config_would_run_the_committed_version(repo, capsys):
  (repo / 'configs' / 'exp.py').write_text('# edited\n')
  assert refused(capsys, *RUN, '--config=configs/exp.py:x=1') == (
      'vidjax: error: the config file configs/exp.py has uncommitted changes: '
      'the TPU VMs would run the committed version; commit them')


def test_modified_import_of_the_config(repo, capsys):
  (repo / 'configs' / 'base.py').write_text('def make():\n  return 1\n')
  assert refused(capsys, *RUN, '--config=configs/exp.py') == (
      'vidjax: error: configs/base.py, imported by configs/exp.py, has '
      'uncommitted changes: the TPU VMs would run the committed version; '
      'commit them')


def test_ignored_and_staged_configs(repo, capsys):
  (repo / 'workdirs').mkdir()
  (repo / 'workdirs' / 'c.py').write_text('def get_config(): return {}\n')
  assert refused(capsys, *RUN, '--config=workdirs/c.py') == (
      'vidjax: error: the config file workdirs/c.py is ignored by git '
      '(.gitignore): git archive HEAD does not ship it; commit it (git add '
      '-f) or put it in the bucket')
  (repo / 'configs' / 'staged.py').write_text('def get_config(): return {}\n')
  git(repo, 'add', 'configs/staged.py')
  assert refused(capsys, *RUN, '--config=configs/staged.py') == (
      'vidjax: error: the config file configs/staged.py is staged but not '
      'committed: git archive HEAD does not ship it; commit it')


def test_init_from_and_class_names_must_ship(repo, tmp_path, capsys):
  config = ['--config=configs/exp.py', '--']
  assert refused(capsys, *RUN, *config, f'--config.init_from={tmp_path}') == (
      f'vidjax: error: config.init_from={tmp_path} is outside the repository: '
      'the TPU VMs get only git HEAD of this checkout; put it in the bucket '
      '(gs://...)')
  assert refused(capsys, *RUN, *config, '--config.data.class_names_file',
                 f'{repo}/labels.txt') == (
      f'vidjax: error: config.data.class_names_file={repo}/labels.txt is an '
      'absolute path, which the TPU VMs do not have (they unpack the '
      'repository at ~/vidjax): give it relative to the repository root')
  (repo / 'workdirs' / 'conv').mkdir(parents=True)
  (repo / 'workdirs' / 'conv' / 'vidjax_model.json').write_text('{}')
  assert refused(capsys, *RUN, *config,
                 '--config.init_from=workdirs/conv') == (
      'vidjax: error: config.init_from=workdirs/conv is ignored by git '
      '(.gitignore): git archive HEAD does not ship it; commit it (git add '
      '-f) or put it in the bucket')
  # Committed, or in the bucket: fine.
  for value in ('labels.txt', 'gs://bkt/labels.txt'):
    assert launch(FakeRunner(), *RUN, *config,
                  f'--config.data.class_names_file={value}') == 0


def test_a_path_set_in_the_config_file_must_ship(repo, capsys):
  (repo / 'configs' / 'ft.py').write_text(
      'from configs import base\n\ndef get_config():\n'
      '  config = base.make()\n  config.init_from = "workdirs/s3d"\n'
      '  return config\n')
  git(repo, 'add', 'configs/ft.py')
  git(repo, 'commit', '-q', '-m', 'ft')
  assert refused(capsys, *RUN, '--config=configs/ft.py') == (
      'vidjax: error: config.init_from=workdirs/s3d (set in configs/ft.py) is '
      'not in the repository at HEAD')


def test_dirty_tree_is_refused_unless_allowed(repo, capsys):
  (repo / 'README.md').write_text('edited\n')
  argv = [*UP, '--config=configs/exp.py']
  assert refused(capsys, *argv) == (
      'vidjax: error: 1 tracked file has uncommitted changes (README.md): the '
      'TPU VMs get git HEAD without them; commit or stash them, or pass '
      '--allow-dirty to ship HEAD anyway')
  runner = FakeRunner()
  assert launch(runner, *argv, '--allow-dirty') == 0
  assert runner.commands[1][:2] == ['git', 'archive']
  assert ('vidjax: --allow-dirty: shipping git HEAD without the uncommitted '
          'changes to 1 tracked file (README.md)') in capsys.readouterr().err
  # run ships nothing (unless a restart may recreate the VM): not checked.
  assert launch(FakeRunner(), *RUN, '--config=configs/exp.py') == 0
  # The files the run reads are checked even with --allow-dirty.
  (repo / 'configs' / 'exp.py').write_text('# edited\n')
  assert 'configs/exp.py has uncommitted changes' in refused(
      capsys, *argv, '--allow-dirty')
