"""launch/tpu_vm.py: the exact gcloud commands, restarts, one-line errors.

Nothing here needs gcloud or a network: commands go to --dry-run or to a
fake runner that records them and answers with scripted statuses.
"""
import ast
import importlib.util
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / 'launch' / 'tpu_vm.py'

# launch/ is a directory of scripts, not a package: load the file itself.
_spec = importlib.util.spec_from_file_location('tpu_vm', SCRIPT)
tpu_vm = importlib.util.module_from_spec(_spec)
sys.modules['tpu_vm'] = tpu_vm
_spec.loader.exec_module(tpu_vm)

CONFIG = 'configs/kinetics400_s3dg.py'
WHERE = ['--zone=us-west4-a', '--project=proj']
BASE = ['--project=proj', '--zone=us-west4-a']
SLICE = ['--accelerator_type=v5litepod-16',
         '--runtime_version=v2-alpha-tpuv5-lite']
TRAIN = ['--bucket=gs://bkt', f'--config={CONFIG}']
GCLOUD = ['gcloud', 'compute', 'tpus']

CREATE = GCLOUD + ['tpu-vm', 'create', 'vidjax', *WHERE,
                   '--accelerator-type=v5litepod-16',
                   '--version=v2-alpha-tpuv5-lite']
CREATE_QUEUED = GCLOUD + ['queued-resources', 'create', 'vidjax',
                          '--node-id=vidjax', *WHERE,
                          '--accelerator-type=v5litepod-16',
                          '--runtime-version=v2-alpha-tpuv5-lite']
QUEUED_STATE = GCLOUD + ['queued-resources', 'describe', 'vidjax', *WHERE,
                         '--format=value(state.state)']
NODE_STATE = GCLOUD + ['tpu-vm', 'describe', 'vidjax', *WHERE,
                       '--format=value(state)']
SSH = GCLOUD + ['tpu-vm', 'ssh', 'vidjax', *WHERE, '--worker=all',
                '--command']
ARCHIVE = ['git', 'archive', '--format=tar.gz', '-o',
           '/tmp/vidjax-vidjax.tar.gz', 'HEAD']
SCP = GCLOUD + ['tpu-vm', 'scp', '/tmp/vidjax-vidjax.tar.gz',
                'vidjax:~/vidjax.tar.gz', '--worker=all', *WHERE]
UNPACK = SSH + ['rm -rf ~/vidjax && mkdir -p ~/vidjax && '
                'tar -xzf ~/vidjax.tar.gz -C ~/vidjax']
BOOTSTRAP = SSH + ['cd ~/vidjax && bash run.sh setup tpu']
RUN = SSH + ['cd ~/vidjax && bash run.sh tpu '
             f'--config={CONFIG} --workdir=gs://bkt/workdirs/vidjax '
             '--config.data.data_dir=gs://bkt/tensorflow_datasets']
DELETE = GCLOUD + ['tpu-vm', 'delete', 'vidjax', *WHERE, '--quiet']
DELETE_QUEUED = GCLOUD + ['queued-resources', 'delete', 'vidjax', *WHERE,
                          '--force', '--quiet']


@pytest.fixture(autouse=True)
def clean_tree(monkeypatch):
  """This checkout's own edits must not fail these tests: a dirty tree is
  tested on a repository of its own (test_shipped.py)."""
  monkeypatch.setattr(tpu_vm, 'tracked_changes', lambda: [])


def plan(*argv, environ=None):
  return tpu_vm.plan(tpu_vm.parse_args(list(argv), environ or {}))


def clean_env(**extra):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith('VIDJAX_TPU_')}
  env.update(extra)
  return env


class FakeRunner(tpu_vm.Runner):
  """Records commands; the training ssh returns `train` statuses in turn,
  describes print `node`/`queued` states in turn (None: describe fails)."""

  def __init__(self, train=(0,), node=(), queued=(), fail=None):
    self.train, self.node, self.queued = list(train), list(node), list(queued)
    self.fail = fail or {}  # tuple(cmd) -> status
    self.commands, self.cwds, self.sleeps = [], [], 0

  def run(self, cmd, cwd=None):
    self.commands.append(cmd)
    self.cwds.append(cwd)
    if tuple(cmd) in self.fail:
      return self.fail[tuple(cmd)]
    if cmd[:len(SSH)] == SSH and 'run.sh tpu ' in cmd[-1]:
      return self.train.pop(0)
    return 0

  def output(self, cmd):
    self.commands.append(cmd)
    self.cwds.append(None)
    states = self.queued if cmd[3] == 'queued-resources' else self.node
    state = states.pop(0)
    return (1, '') if state is None else (0, state + '\n')

  def sleep(self, seconds):
    assert seconds == tpu_vm.POLL_SECONDS
    self.sleeps += 1


def launch(runner, *argv):
  return tpu_vm.main(list(argv), runner=runner, environ={})


def error_line(capsys):
  lines = capsys.readouterr().err.splitlines()
  errors = [l for l in lines if l.startswith('vidjax: error:')]
  assert len(errors) == 1, lines
  assert lines[-1] == errors[0]
  return errors[0]


# ------------------------------------------------------------- Dry runs.

def test_up_dry_run_as_a_script_prints_every_command():
  result = subprocess.run(
      [sys.executable, str(SCRIPT), 'up', *BASE, *SLICE, *TRAIN, '--spot',
       '--restart=5', '--dry-run', '--allow-dirty', '--',
       '--config.batch_size=32',
       '--config.note=two words'],
      capture_output=True, text=True, cwd=ROOT, env=clean_env(), timeout=30,
      check=False)
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''
  run = RUN[:-1] + [RUN[-1] + " --config.batch_size=32 "
                    "'--config.note=two words'"]
  expected = [CREATE + ['--spot'], ARCHIVE, SCP, UNPACK, BOOTSTRAP, run]
  assert result.stdout.splitlines() == [shlex.join(c) for c in expected]
  # Two shells (local, then the worker's) still see one argument.
  remote = shlex.split(result.stdout.splitlines()[-1])[-1]
  assert shlex.split(remote)[-2:] == ['--config.batch_size=32',
                                      '--config.note=two words']


def test_dry_run_via_main_prints_and_runs_nothing(capsys):
  runner = FakeRunner()
  assert launch(runner, 'delete', *BASE, '--dry-run') == 0
  assert capsys.readouterr().out == shlex.join(DELETE) + '\n'
  assert runner.commands == []


def test_create_on_demand_spot_and_queued():
  assert plan('create', *BASE, *SLICE) == [CREATE]
  assert plan('create', *BASE, *SLICE, '--spot') == [CREATE + ['--spot']]
  assert plan('create', *BASE, *SLICE, '--queued') == [CREATE_QUEUED,
                                                       QUEUED_STATE]
  assert plan('create', *BASE, *SLICE, '--queued', '--spot') == [
      CREATE_QUEUED + ['--spot'], QUEUED_STATE]


def test_copy_bootstrap_run_stop_delete():
  assert plan('copy', *BASE) == [ARCHIVE, SCP, UNPACK]
  assert plan('bootstrap', *BASE) == [BOOTSTRAP]
  assert plan('run', *BASE, *TRAIN) == [RUN]
  assert plan('stop', *BASE) == [GCLOUD + ['tpu-vm', 'stop', 'vidjax',
                                           *WHERE]]
  assert plan('delete', *BASE) == [DELETE]
  assert plan('delete', *BASE, '--queued') == [DELETE_QUEUED]


def test_up_queued_is_create_wait_copy_bootstrap_run():
  assert plan('up', *BASE, *SLICE, *TRAIN, '--queued') == [
      CREATE_QUEUED, QUEUED_STATE, ARCHIVE, SCP, UNPACK, BOOTSTRAP, RUN]


def test_run_names_experiment_config_arg_and_quotes_pass_through():
  [cmd] = plan('run', *BASE, '--bucket=gs://bkt/', f'--config={CONFIG}:x',
               '--experiment=k400 try', '--', '--config.a=1', "it's", '$HOME')
  words = shlex.split(cmd[-1])
  assert words[:5] == ['cd', '~/vidjax', '&&', 'bash', 'run.sh']
  assert words[5:] == ['tpu', f'--config={CONFIG}:x',
                       '--workdir=gs://bkt/workdirs/k400 try',
                       '--config.data.data_dir=gs://bkt/tensorflow_datasets',
                       '--config.a=1', "it's", '$HOME']


def test_other_name_renames_everything():
  commands = plan('up', *BASE, *SLICE, *TRAIN, '--name=k400-a', '--queued')
  assert commands[0][5:7] == ['k400-a', '--node-id=k400-a']
  assert commands[2][-2] == '/tmp/vidjax-k400-a.tar.gz'
  assert commands[3][5:7] == ['/tmp/vidjax-k400-a.tar.gz',
                              'k400-a:~/vidjax.tar.gz']
  assert '--workdir=gs://bkt/workdirs/k400-a' in commands[-1][-1]


def test_environment_variables_are_defaults_and_flags_win():
  environ = {'VIDJAX_TPU_PROJECT': 'proj', 'VIDJAX_TPU_ZONE': 'us-west4-a',
             'VIDJAX_TPU_ACCELERATOR_TYPE': 'v5litepod-16',
             'VIDJAX_TPU_RUNTIME_VERSION': 'v2-alpha-tpuv5-lite',
             'VIDJAX_TPU_SPOT': '1', 'VIDJAX_TPU_QUEUED': 'true'}
  assert plan('create', environ=environ) == [CREATE_QUEUED + ['--spot'],
                                             QUEUED_STATE]
  assert plan('create', '--no-spot', '--no-queued', environ=environ) == [
      CREATE]
  assert plan('delete', '--project=other', environ=environ)[0][7] == (
      '--project=other')


# -------------------------------------------------------------- Running.

def test_successful_runs_execute_exactly_the_plan():
  runner = FakeRunner(queued=['ACTIVE'])
  argv = ['up', *BASE, *SLICE, *TRAIN, '--queued']
  assert launch(runner, *argv) == 0
  assert runner.commands == plan(*argv)
  # git archive packs this checkout wherever the script is started from.
  assert runner.cwds[runner.commands.index(ARCHIVE)] == str(ROOT)


def test_queued_create_polls_until_active():
  runner = FakeRunner(queued=['WAITING_FOR_RESOURCES', 'PROVISIONING',
                              'ACTIVE'])
  assert launch(runner, 'create', *BASE, *SLICE, '--queued') == 0
  assert runner.commands == [CREATE_QUEUED] + [QUEUED_STATE] * 3
  assert runner.sleeps == 2


def test_queued_create_that_fails_stops(capsys):
  runner = FakeRunner(queued=['ACCEPTED', 'FAILED'])
  assert launch(runner, 'create', *BASE, *SLICE, '--queued') == 1
  assert 'queued resource vidjax is FAILED' in error_line(capsys)


def test_status_75_reruns_only_the_training_command():
  runner = FakeRunner(train=[75, 75, 0], node=['READY', 'READY'])
  assert launch(runner, 'run', *BASE, *SLICE, *TRAIN, '--restart=2') == 0
  assert runner.commands == [RUN, NODE_STATE, RUN, NODE_STATE, RUN]


def test_preempted_vm_is_recreated_then_training_resumes():
  runner = FakeRunner(train=[255, 0], node=['PREEMPTED'])
  assert launch(runner, 'up', *BASE, *SLICE, *TRAIN, '--spot',
                '--restart=1') == 0
  spot = CREATE + ['--spot']
  assert runner.commands == [
      spot, ARCHIVE, SCP, UNPACK, BOOTSTRAP, RUN, NODE_STATE,
      # The archive is not rebuilt: the resumed run gets the same code.
      DELETE, spot, SCP, UNPACK, BOOTSTRAP, RUN]


def test_run_alone_archives_when_it_recreates():
  runner = FakeRunner(train=[75, 0], node=['TERMINATED'])
  assert launch(runner, 'run', *BASE, *SLICE, *TRAIN, '--restart=1') == 0
  assert runner.commands == [RUN, NODE_STATE, DELETE, CREATE, ARCHIVE, SCP,
                             UNPACK, BOOTSTRAP, RUN]


def test_preempted_queued_node_is_recreated_and_waited_for():
  # The preempted node is gone (describe fails); the queued resource says so.
  runner = FakeRunner(train=[255, 0], node=[None],
                      queued=['ACTIVE', 'SUSPENDED', 'PROVISIONING', 'ACTIVE'])
  assert launch(runner, 'up', *BASE, *SLICE, *TRAIN, '--queued', '--spot',
                '--restart=3') == 0
  spot = CREATE_QUEUED + ['--spot']
  assert runner.commands == [
      spot, QUEUED_STATE, ARCHIVE, SCP, UNPACK, BOOTSTRAP, RUN,
      NODE_STATE, QUEUED_STATE,
      DELETE_QUEUED, spot, QUEUED_STATE, QUEUED_STATE, SCP, UNPACK,
      BOOTSTRAP, RUN]


def test_other_failures_stop_with_their_status(capsys):
  runner = FakeRunner(train=[3], node=['READY'])
  assert launch(runner, 'run', *BASE, *SLICE, *TRAIN, '--restart=5') == 3
  assert runner.commands == [RUN, NODE_STATE]
  assert error_line(capsys) == (
      'vidjax: error: gcloud compute tpus tpu-vm ssh vidjax failed with '
      'status 3')


def test_restart_limit_is_respected(capsys):
  runner = FakeRunner(train=[75, 75, 75], node=['READY', 'READY'])
  assert launch(runner, 'run', *BASE, *SLICE, *TRAIN, '--restart=2') == 75
  assert runner.commands == [RUN, NODE_STATE, RUN, NODE_STATE, RUN]
  assert 'failed with status 75' in error_line(capsys)


def test_no_restart_by_default(capsys):
  runner = FakeRunner(train=[75])
  assert launch(runner, 'run', *BASE, *TRAIN) == 75
  assert runner.commands == [RUN]
  assert 'rerun the same command to resume' in error_line(capsys)


def test_a_failing_gcloud_command_stops_the_sequence(capsys):
  runner = FakeRunner(fail={tuple(SCP): 2})
  assert launch(runner, 'up', *BASE, *SLICE, *TRAIN) == 2
  assert runner.commands == [CREATE, ARCHIVE, SCP]
  assert error_line(capsys) == (
      'vidjax: error: gcloud compute tpus tpu-vm scp /tmp/vidjax-vidjax.tar.gz'
      " 'vidjax:~/vidjax.tar.gz' failed with status 2")


# --------------------------------------------------------------- Errors.

def test_missing_gcloud_is_one_line(tmp_path):
  empty = tmp_path / 'bin'
  empty.mkdir()
  result = subprocess.run(
      [os.path.abspath(sys.executable), str(SCRIPT), 'create', *BASE, *SLICE],
      capture_output=True, text=True, cwd=ROOT,
      env=clean_env(PATH=str(empty)), timeout=30, check=False)
  assert result.returncode == 1
  assert result.stdout == ''
  [line] = result.stderr.splitlines()
  assert line.startswith('vidjax: error: gcloud not found on PATH')


@pytest.mark.parametrize('argv, message', [
    (['create', '--zone=z', *SLICE], 'create needs --project'),
    (['run', *BASE, '--bucket=my-bucket', f'--config={CONFIG}'],
     '--bucket must be a gs:// URL'),
    (['up', *BASE, *SLICE, '--bucket=gs://', f'--config={CONFIG}'],
     '--bucket must be a gs:// URL'),
    (['run', *BASE, '--bucket=gs://bkt'], 'run needs --config'),
    (['run', *BASE, *TRAIN, '--restart=1'],
     'run needs --accelerator_type, --runtime_version'),
    (['run', *BASE, '--bucket=gs://bkt', '--config=configs/nope.py'],
     'configs/nope.py is not a file of this checkout'),
    (['stop', *BASE, '--queued'], 'a queued resource cannot be stopped'),
    (['delete', *BASE, '--name=My_TPU'], 'is not a valid TPU name'),
    (['delete', *BASE, '--', '--x'], 'delete takes none'),
    (['launch', *BASE], "invalid choice: 'launch'"),
    (['create', *BASE, *SLICE, '--colour=red'], 'unrecognized arguments'),
])
def test_user_errors_are_one_line(argv, message, capsys):
  runner = FakeRunner()
  assert launch(runner, *argv) == 1
  line = error_line(capsys)
  assert line.startswith('vidjax: error: ') and message in line, line
  assert runner.commands == []


def test_bad_boolean_variable_is_one_line(capsys):
  assert tpu_vm.main(['delete', *BASE], runner=FakeRunner(),
                     environ={'VIDJAX_TPU_SPOT': 'maybe'}) == 1
  assert 'VIDJAX_TPU_SPOT' in error_line(capsys)


def test_real_runner_with_a_stub_gcloud(tmp_path):
  # The subprocess path end to end: PATH lookup, git archive of this
  # checkout, commands passed to gcloud word for word, statuses returned.
  if shutil.which('git') is None or subprocess.run(
      ['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True,
      check=False).returncode:
    pytest.skip('needs git and a git checkout')
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  log = tmp_path / 'gcloud.log'
  stub = bin_dir / 'gcloud'
  stub.write_text(
      f'#!{sys.executable}\n'
      'import sys\n'
      f'open({str(log)!r}, "a").write(repr(sys.argv[1:]) + "\\n")\n'
      'sys.exit(75 if "run.sh tpu" in sys.argv[-1] else 0)\n')
  stub.chmod(0o755)
  name = f'vidjax-test-{os.getpid()}'
  tarball = pathlib.Path(f'/tmp/vidjax-{name}.tar.gz')
  # Only the stub and git on PATH: a real gcloud must never be reached.
  (bin_dir / 'git').symlink_to(shutil.which('git'))
  try:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), 'up', *BASE, *SLICE, *TRAIN,
         f'--name={name}', '--allow-dirty'],
        capture_output=True, text=True, cwd=tmp_path, timeout=30, check=False,
        env=clean_env(PATH=str(bin_dir)))
    assert tarball.stat().st_size > 0
  finally:
    tarball.unlink(missing_ok=True)
  assert result.returncode == 75
  assert result.stderr.splitlines()[-1].startswith(
      f'vidjax: error: gcloud compute tpus tpu-vm ssh {name} failed with '
      'status 75')
  calls = [ast.literal_eval(l) for l in log.read_text().splitlines()]
  expected = tpu_vm.plan(tpu_vm.parse_args(
      ['up', *BASE, *SLICE, *TRAIN, f'--name={name}'], {}))
  assert [['gcloud'] + c for c in calls] == [
      c for c in expected if c[0] == 'gcloud']
