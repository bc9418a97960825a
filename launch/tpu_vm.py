#!/usr/bin/env python3
"""Cloud TPU VM launcher: create a slice, ship the code, set up, train, delete.

  python launch/tpu_vm.py up --project=P --zone=us-west4-a \\
      --accelerator_type=v5litepod-16 --runtime_version=v2-alpha-tpuv5-lite \\
      --bucket=gs://B --spot --restart=5 --config=configs/kinetics400_s3dg.py

Subcommands: create, copy, bootstrap, run, stop, delete, and up (create +
copy + bootstrap + run). `--dry-run` prints the commands instead. Every
parameter flag defaults to the environment variable VIDJAX_TPU_<FLAG>
(VIDJAX_TPU_PROJECT, ...). Errors print one `vidjax: error: ...` line and
exit 1; a failing command exits with that command's status.

Standard library only: it runs on any machine with Python and the gcloud CLI,
before (and without) vidjax's own environment.
"""
import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The trainer's status after a SIGTERM-triggered checkpoint (EX_TEMPFAIL):
# the same command resumes from that checkpoint.
RESUMABLE = 75
# A node in one of these states never comes back: it must be recreated.
GONE_NODE_STATES = ('PREEMPTED', 'TERMINATED')
GONE_QUEUED_STATES = ('SUSPENDING', 'SUSPENDED', 'FAILED')
READY_QUEUED_STATES = ('ACTIVE', 'READY')
POLL_SECONDS = 30

# (flag, metavar, help, is_bool). Each also reads VIDJAX_TPU_<FLAG>.
PARAMS = (
    ('project', 'PROJECT', 'Google Cloud project ID', False),
    ('zone', 'ZONE', 'zone of the slice, e.g. us-west4-a', False),
    ('name', 'NAME', 'TPU (and queued-resource) name (default: vidjax)',
     False),
    ('accelerator_type', 'TYPE', 'slice type, e.g. v5litepod-16', False),
    ('runtime_version', 'VERSION', 'TPU software version, e.g. '
     'v2-alpha-tpuv5-lite', False),
    ('bucket', 'gs://BUCKET', 'bucket holding tensorflow_datasets/ and '
     'workdirs/', False),
    ('spot', None, 'create a spot slice (cheaper, can be preempted)', True),
    ('queued', None, 'create the slice through a queued resource, which '
     'waits for capacity', True),
)
DEFAULTS = {'name': 'vidjax', 'spot': False, 'queued': False}

# What each subcommand needs before anything runs: a missing value must not
# surface as a gcloud error halfway through `up`.
NEEDS = {
    'create': ('project', 'zone', 'accelerator_type', 'runtime_version'),
    'copy': ('project', 'zone'),
    'bootstrap': ('project', 'zone'),
    'run': ('project', 'zone', 'bucket', 'config'),
    'stop': ('project', 'zone'),
    'delete': ('project', 'zone'),
    'up': ('project', 'zone', 'accelerator_type', 'runtime_version', 'bucket',
           'config'),
}
STAGES = {
    'create': ('create',),
    'copy': ('copy',),
    'bootstrap': ('bootstrap',),
    'run': ('train',),
    'stop': ('stop',),
    'delete': ('delete',),
    'up': ('create', 'copy', 'bootstrap', 'train'),
}
# TPU node IDs: lowercase letters, digits and hyphens, a letter first.
_NAME_RE = re.compile(r'[a-z]([-a-z0-9]{0,61}[a-z0-9])?')
_TRUE, _FALSE = ('1', 'true', 'yes', 'on'), ('0', 'false', 'no', 'off', '')


class LaunchError(Exception):
  """A user-facing failure: one line of text and the exit status."""

  def __init__(self, message: str, status: int = 1):
    super().__init__(' '.join(message.split()))
    self.status = status


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    # argparse's usage block + exit 2 would break the one-line contract.
    raise LaunchError(f'{message} (see python launch/tpu_vm.py --help)')


def _parser() -> argparse.ArgumentParser:
  common = _Parser(add_help=False)
  for flag, metavar, help_text, is_bool in PARAMS:
    env = f' [env VIDJAX_TPU_{flag.upper()}]'
    if is_bool:
      common.add_argument(f'--{flag}', action=argparse.BooleanOptionalAction,
                          default=None, help=help_text + env)
    else:
      common.add_argument(f'--{flag}', metavar=metavar, help=help_text + env)
  common.add_argument('--dry-run', '--dry_run', dest='dry_run',
                      action='store_true',
                      help='print the commands, one a line, and exit 0')

  training = _Parser(add_help=False)
  training.add_argument('--config', metavar='PATH[:ARG]',
                        help='repo-relative config, e.g. '
                        'configs/kinetics400_s3dg.py')
  training.add_argument('--experiment', metavar='NAME',
                        help='workdir is BUCKET/workdirs/NAME (default: '
                        '--name)')
  training.add_argument('--restart', type=int, default=0, metavar='N',
                        help='resume up to N times after a preemption '
                        '(recreating a preempted VM)')

  parser = _Parser(
      prog='python launch/tpu_vm.py',
      description='Launch vidjax training on a Cloud TPU VM slice. Arguments '
      'after -- (run, up) are passed on to python -m vidjax.main.')
  sub = parser.add_subparsers(dest='command', metavar='SUBCOMMAND',
                              required=True)
  helps = {
      'create': 'create the TPU VM (or queued resource, waiting until ACTIVE)',
      'copy': 'archive git HEAD and unpack it as ~/vidjax on every worker',
      'bootstrap': 'build the cached tpu environment on every worker (once)',
      'run': 'run the training command on every worker, logs streamed back',
      'stop': 'stop the TPU VM (not for queued resources)',
      'delete': 'delete the TPU VM or queued resource',
      'up': 'create + copy + bootstrap + run',
  }
  for command, help_text in helps.items():
    parents = [common] + ([training] if command in ('run', 'up') else [])
    sub.add_parser(command, parents=parents, help=help_text,
                   description=help_text)
  return parser


def _env_bool(variable: str, value: str) -> bool:
  if value.strip().lower() in _TRUE:
    return True
  if value.strip().lower() in _FALSE:
    return False
  raise LaunchError(f'{variable}={value!r} is not a boolean; use 1 or 0')


def parse_args(argv, environ=None) -> argparse.Namespace:
  """Flags, then VIDJAX_TPU_* variables, then defaults; validated."""
  environ = os.environ if environ is None else environ
  argv = list(argv)
  extra = []
  if '--' in argv:
    cut = argv.index('--')
    argv, extra = argv[:cut], argv[cut + 1:]
  args = _parser().parse_args(argv)
  args.extra = extra
  for flag, _, _, is_bool in PARAMS:
    if getattr(args, flag) is not None:
      continue
    variable = f'VIDJAX_TPU_{flag.upper()}'
    value = environ.get(variable)
    if value is not None and is_bool:
      value = _env_bool(variable, value)
    elif value == '':
      value = None
    setattr(args, flag, DEFAULTS.get(flag) if value is None else value)
  for key in ('config', 'experiment'):
    if not hasattr(args, key):
      setattr(args, key, None)
  if not hasattr(args, 'restart'):
    args.restart = 0
  if args.experiment is None:
    args.experiment = args.name
  _validate(args)
  return args


def _validate(args):
  needs = list(NEEDS[args.command])
  if args.command == 'run' and args.restart > 0:
    # Recreating a preempted VM needs everything `create` needs.
    needs += ['accelerator_type', 'runtime_version']
  missing = [f for f in dict.fromkeys(needs) if not getattr(args, f)]
  if missing:
    flags = ', '.join(f'--{f}' for f in missing)
    env = [f'VIDJAX_TPU_{f.upper()}' for f in missing if f != 'config']
    how = f' or set {", ".join(env)}' if env else ''
    raise LaunchError(f'{args.command} needs {flags}: pass '
                      f'{"it" if len(missing) == 1 else "them"} as flags{how}')
  if args.bucket is not None:
    bucket = args.bucket.rstrip('/')
    if not bucket.startswith('gs://') or len(bucket) <= len('gs://'):
      raise LaunchError(f'--bucket must be a gs:// URL that every worker can '
                        f'read, e.g. --bucket=gs://my-bucket (got '
                        f'{args.bucket!r})')
    args.bucket = bucket
  if not _NAME_RE.fullmatch(args.name):
    raise LaunchError(f'--name={args.name!r} is not a valid TPU name: use '
                      'lowercase letters, digits and hyphens, starting with a '
                      'letter (at most 63 characters)')
  if args.restart < 0:
    raise LaunchError(f'--restart must be 0 or more (got {args.restart})')
  if args.extra and args.command not in ('run', 'up'):
    raise LaunchError(f'arguments after -- are passed to training; '
                      f'{args.command} takes none (got {shlex.join(args.extra)})')
  if args.config:
    path = args.config.split(':', 1)[0]
    if os.path.isabs(path) or not os.path.isfile(os.path.join(ROOT, path)):
      raise LaunchError(f'--config={args.config}: {path} is not a file of this '
                        'checkout; give a path relative to the repository root,'
                        ' e.g. --config=configs/kinetics400_s3dg.py')
  if args.command == 'stop' and args.queued:
    raise LaunchError(_NO_QUEUED_STOP)


_NO_QUEUED_STOP = ('a queued resource cannot be stopped, only deleted: run '
                   'python launch/tpu_vm.py delete --queued (checkpoints in the '
                   'bucket are kept)')


# ------------------------------------------------------------ Commands.

def _where(args):
  return [f'--zone={args.zone}', f'--project={args.project}']


def _tpu_vm(verb, args):
  return ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, args.name]


def _queued(verb, args):
  return ['gcloud', 'compute', 'tpus', 'queued-resources', verb, args.name]


def create_command(args):
  if args.queued:
    cmd = _queued('create', args) + [
        f'--node-id={args.name}', *_where(args),
        f'--accelerator-type={args.accelerator_type}',
        f'--runtime-version={args.runtime_version}']
  else:
    cmd = _tpu_vm('create', args) + [
        *_where(args), f'--accelerator-type={args.accelerator_type}',
        f'--version={args.runtime_version}']
  return cmd + (['--spot'] if args.spot else [])


def queued_state_command(args):
  return _queued('describe', args) + [*_where(args),
                                      '--format=value(state.state)']


def node_state_command(args):
  return _tpu_vm('describe', args) + [*_where(args), '--format=value(state)']


def archive_path(args):
  return f'/tmp/vidjax-{args.name}.tar.gz'


def archive_command(args):
  # HEAD, not the work tree: every worker (and every recreated VM) gets
  # exactly a commit, never half-edited files.
  return ['git', 'archive', '--format=tar.gz', '-o', archive_path(args),
          'HEAD']


def ssh_command(args, remote: str):
  return _tpu_vm('ssh', args) + [*_where(args), '--worker=all', '--command',
                                 remote]


def upload_commands(args):
  scp = (['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', archive_path(args),
          f'{args.name}:~/vidjax.tar.gz', '--worker=all'] + _where(args))
  unpack = ssh_command(args, 'rm -rf ~/vidjax && mkdir -p ~/vidjax && '
                       'tar -xzf ~/vidjax.tar.gz -C ~/vidjax')
  return [scp, unpack]


def bootstrap_command(args):
  return ssh_command(args, 'cd ~/vidjax && bash run.sh setup tpu')


def train_command(args):
  workdir = f'{args.bucket}/workdirs/{args.experiment}'
  flags = [f'--config={args.config}', f'--workdir={workdir}',
           f'--config.data.data_dir={args.bucket}/tensorflow_datasets',
           *args.extra]
  # The remote side runs --command through a shell: quote for it.
  return ssh_command(args, 'cd ~/vidjax && bash run.sh tpu ' +
                     shlex.join(flags))


def stop_command(args):
  if args.queued:
    raise LaunchError(_NO_QUEUED_STOP)
  return _tpu_vm('stop', args) + _where(args)


def delete_command(args):
  if args.queued:
    # --force also deletes the node the queued resource holds.
    return _queued('delete', args) + [*_where(args), '--force', '--quiet']
  return _tpu_vm('delete', args) + [*_where(args), '--quiet']


def _stage_commands(stage, args):
  if stage == 'create':
    return [create_command(args)] + (
        [queued_state_command(args)] if args.queued else [])
  if stage == 'copy':
    return [archive_command(args)] + upload_commands(args)
  if stage == 'bootstrap':
    return [bootstrap_command(args)]
  if stage == 'train':
    return [train_command(args)]
  if stage == 'stop':
    return [stop_command(args)]
  if stage == 'delete':
    return [delete_command(args)]
  raise ValueError(stage)


def plan(args) -> list[list[str]]:
  """The commands of `args.command`, one attempt, in order (what --dry-run
  prints): no polling loop, no restarts."""
  return [cmd for stage in STAGES[args.command]
          for cmd in _stage_commands(stage, args)]


# ------------------------------------------------------------ Execution.

class Runner:
  """Runs commands for real; tests pass a fake that records them."""

  def run(self, cmd, cwd=None) -> int:
    """Runs `cmd` with output streamed to ours; returns its exit status."""
    _note(f'$ {shlex.join(cmd)}')
    try:
      status = subprocess.run(cmd, cwd=cwd, check=False).returncode
    except FileNotFoundError:
      raise LaunchError(f'{cmd[0]} not found on PATH') from None
    return 128 - status if status < 0 else status  # Killed by signal -s.

  def output(self, cmd) -> tuple[int, str]:
    """(status, stdout) of `cmd`; its stderr goes to ours."""
    try:
      done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True,
                            check=False)
    except FileNotFoundError:
      raise LaunchError(f'{cmd[0]} not found on PATH') from None
    return done.returncode, done.stdout

  def sleep(self, seconds: float):
    time.sleep(seconds)


def _note(message: str):
  print(f'vidjax: {message}', file=sys.stderr, flush=True)


def _short(cmd) -> str:
  """The command up to its first flag: names it in one line."""
  words = []
  for word in cmd:
    if word.startswith('-'):
      break
    words.append(word)
  return shlex.join(words)


class Launch:
  """Carries out a plan with `runner`, polling and restarting as needed."""

  def __init__(self, args, runner: Runner):
    self.args = args
    self.runner = runner
    self.archived = False  # One archive per invocation (see `copy`).

  def check(self, cmd, cwd=None):
    status = self.runner.run(cmd, cwd=cwd)
    if status:
      raise LaunchError(f'{_short(cmd)} failed with status {status}', status)

  def execute(self):
    for stage in STAGES[self.args.command]:
      getattr(self, f'do_{stage}')()

  def do_create(self):
    self.check(create_command(self.args))
    if self.args.queued:
      self.wait_until_active()

  def wait_until_active(self):
    # No deadline: waiting for capacity is the point of a queued resource.
    cmd, name, last = queued_state_command(self.args), self.args.name, None
    while True:
      status, out = self.runner.output(cmd)
      if status:
        raise LaunchError(f'{_short(cmd)} failed with status {status}', status)
      state = out.strip()
      if state in READY_QUEUED_STATES:
        return
      if state in GONE_QUEUED_STATES:
        raise LaunchError(f'queued resource {name} is {state}; delete it '
                          '(python launch/tpu_vm.py delete --queued) and '
                          'create it again')
      if state != last:
        _note(f'queued resource {name} is {state or "not ready"}; checking '
              f'every {POLL_SECONDS} s')
        last = state
      self.runner.sleep(POLL_SECONDS)

  def do_copy(self):
    # A VM recreated mid-run gets the archive the run started with, even if
    # HEAD has moved since: the resumed trainer is the same code.
    if not self.archived:
      self.check(archive_command(self.args), cwd=ROOT)
      self.archived = True
    for cmd in upload_commands(self.args):
      self.check(cmd)

  def do_bootstrap(self):
    self.check(bootstrap_command(self.args))

  def do_stop(self):
    self.check(stop_command(self.args))

  def do_delete(self):
    self.check(delete_command(self.args))

  def do_train(self):
    args, cmd, restarts = self.args, train_command(self.args), 0
    while True:
      status = self.runner.run(cmd)
      if status == 0:
        return
      failure = f'{_short(cmd)} failed with status {status}'
      if restarts >= args.restart:
        if status == RESUMABLE:
          failure += (' (training stopped after saving a checkpoint: rerun '
                      'the same command to resume')
          failure += (f'; all --restart={args.restart} restarts used)'
                      if args.restart else ', or pass --restart=N)')
        elif args.spot and not args.restart:
          failure += (' (if the spot VM was preempted, pass --restart=N to '
                      'recreate it and resume)')
        raise LaunchError(failure, status)
      gone = self.gone()
      if gone is None and status != RESUMABLE:
        raise LaunchError(failure, status)
      restarts += 1
      if gone is None:
        _note(f'training exited with status {status} after saving a '
              f'checkpoint; restart {restarts}/{args.restart}: resuming')
      else:
        _note(f'{gone}; restart {restarts}/{args.restart}: recreating it, '
              'then resuming')
        self.do_delete()
        self.do_create()
        self.do_copy()
        self.do_bootstrap()

  def gone(self):
    """Why the VM must be recreated, or None if it is still there."""
    status, out = self.runner.output(node_state_command(self.args))
    state = out.strip() if status == 0 else ''
    if state in GONE_NODE_STATES:
      return f'TPU VM {self.args.name} is {state}'
    if self.args.queued and status:
      # A queued resource may drop its preempted node altogether.
      status, out = self.runner.output(queued_state_command(self.args))
      state = out.strip() if status == 0 else ''
      if state in GONE_QUEUED_STATES:
        return f'queued resource {self.args.name} is {state}'
    return None


_INSTALL = {
    'gcloud': 'install the Google Cloud CLI '
              '(https://cloud.google.com/sdk/docs/install) and run gcloud auth '
              'login',
    'git': 'install git (copy archives the checkout with git archive)',
}


def _needed_tools(args):
  tools = ['gcloud']
  if 'copy' in STAGES[args.command] or (args.command == 'run' and
                                        args.restart > 0):
    tools.append('git')
  return tools


def main(argv=None, runner: Runner | None = None, environ=None) -> int:
  """The command line; returns the exit status. `runner` replaces the real
  one (and the PATH check) in tests; `environ` replaces os.environ."""
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    try:
      args = parse_args(argv, environ)
    except SystemExit as e:  # --help.
      return e.code if isinstance(e.code, int) else 0
    commands = plan(args)
    if args.dry_run:
      for cmd in commands:
        print(shlex.join(cmd))
      return 0
    if runner is None:
      for tool in _needed_tools(args):
        if shutil.which(tool) is None:
          raise LaunchError(f'{tool} not found on PATH; {_INSTALL[tool]}, or '
                            'pass --dry-run to only print the commands')
      runner = Runner()
    Launch(args, runner).execute()
    return 0
  except LaunchError as e:
    print(f'vidjax: error: {e}', file=sys.stderr)
    return e.status
  except KeyboardInterrupt:
    print('vidjax: error: interrupted', file=sys.stderr)
    return 130


if __name__ == '__main__':
  sys.exit(main())
