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

The VMs get `git archive HEAD`: before any command runs (dry runs alike),
run and up check that every local file the run reads is in HEAD as it is
here, and a command that ships refuses uncommitted changes to tracked files
unless --allow-dirty (see "What ships" below).

Standard library only: it runs on any machine with Python and the gcloud CLI,
before (and without) vidjax's own environment.
"""
import argparse
import ast
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
  common.add_argument('--allow-dirty', '--allow_dirty', dest='allow_dirty',
                      action='store_true',
                      help='ship git HEAD although tracked files have '
                      'uncommitted changes (they are not shipped; the files '
                      'the run reads must still be committed)')

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
  if args.command in ('run', 'up'):
    check_shipped(dependencies(args.config, args.extra))
  if _ships(args):
    check_clean(args.allow_dirty, args.dry_run)


def _ships(args) -> bool:
  """Whether the command archives HEAD (a restart may recreate the VM)."""
  return 'copy' in STAGES[args.command] or (args.command == 'run' and
                                            args.restart > 0)


_NO_QUEUED_STOP = ('a queued resource cannot be stopped, only deleted: run '
                   'python launch/tpu_vm.py delete --queued (checkpoints in the '
                   'bucket are kept)')


# ------------------------------------------------------------ What ships.
#
# The TPU VMs get `git archive HEAD` (`copy`), nothing else of this machine.
# A file the run reads that HEAD lacks, or has in another version, is a
# training run on the wrong input that nobody sees: each must be committed
# and unchanged. Dry runs check the same way.

# Config keys naming a file the training reads, set after `--` as
# `--config.KEY=PATH` or in a config file (`config.init_from = '...'`).
PATH_KEYS = ('init_from', 'data.class_names_file')
_REMOTE_ROOT = '~/vidjax'
_WHY = {
    'untracked': 'is untracked: git archive HEAD does not ship it; commit it',
    'staged': 'is staged but not committed: git archive HEAD does not ship '
              'it; commit it',
    'modified': 'has uncommitted changes: the TPU VMs would run the committed '
                'version; commit them',
    'ignored': 'is ignored by git (.gitignore): git archive HEAD does not '
               'ship it; commit it (git add -f) or put it in the bucket',
    'missing': 'is not in the repository at HEAD',
    'export-ignore': 'is marked export-ignore (.gitattributes): git archive '
                     'leaves it out',
    'outside': 'is outside the repository: the TPU VMs get only git HEAD of '
               'this checkout; put it in the bucket (gs://...)',
    'absolute': f'is an absolute path, which the TPU VMs do not have (they '
                f'unpack the repository at {_REMOTE_ROOT}): give it relative '
                'to the repository root',
}


def _git(*args) -> str:
  try:
    done = subprocess.run(['git', '-C', ROOT, *args], capture_output=True,
                          text=True, check=False)
  except FileNotFoundError:
    raise LaunchError('git not found on PATH; install git (the TPU VMs get '
                      'this checkout through git archive)') from None
  if done.returncode:
    first = (done.stderr.strip().splitlines() or ['failed'])[-1]
    raise LaunchError(f'git {args[0]} in {ROOT} failed: {first} (the TPU VMs '
                      'get this checkout through git archive HEAD)')
  return done.stdout


def _config_imports(path: str) -> list[str]:
  """Repo-relative files of the `configs` modules a config file imports."""
  try:
    with open(os.path.join(ROOT, path), encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
  except (OSError, SyntaxError, ValueError):
    return []  # It fails to load everywhere alike; not a shipping matter.
  modules = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules += [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      modules += [f'{node.module}.{a.name}' for a in node.names]
  files = []
  for module in modules:
    if module.split('.')[0] != 'configs':
      continue
    base = module.replace('.', '/')
    for candidate in (f'{base}.py', f'{base}/__init__.py'):
      if os.path.isfile(os.path.join(ROOT, candidate)):
        files.append(candidate)
        break
  return files


def _config_paths(path: str) -> list[tuple[str, str]]:
  """(key, value) of PATH_KEYS set to a string in a config file."""
  try:
    with open(os.path.join(ROOT, path), encoding='utf-8') as f:
      tree = ast.parse(f.read(), path)
  except (OSError, SyntaxError, ValueError):
    return []
  names = {key.rsplit('.', 1)[-1]: key for key in PATH_KEYS}
  found = []
  for node in ast.walk(tree):
    pairs = []
    if isinstance(node, ast.Assign):
      pairs = [(t.attr, node.value) for t in node.targets
               if isinstance(t, ast.Attribute)]
    elif isinstance(node, ast.keyword) and node.arg:
      pairs = [(node.arg, node.value)]
    for name, value in pairs:
      if (name in names and isinstance(value, ast.Constant) and
          isinstance(value.value, str) and value.value):
        found.append((f'config.{names[name]}', value.value))
  return found


def _flag_paths(extra) -> list[tuple[str, str]]:
  """(key, value) of `--config.KEY=PATH` or `--config.KEY PATH` in extra."""
  found = []
  for i, word in enumerate(extra):
    for key in PATH_KEYS:
      flag = f'--config.{key}'
      if word.startswith(flag + '='):
        found.append((f'config.{key}', word[len(flag) + 1:]))
      elif word == flag and i + 1 < len(extra):
        found.append((f'config.{key}', extra[i + 1]))
  return found


def dependencies(config, extra) -> list[tuple[str, str]]:
  """(label, path) of every local file a run reads: the config, the configs
  it imports, path-like :ARG values and PATH_KEYS values; local ones only
  (a gs:// URL is read remotely). `label` names it in an error line."""
  if not config:
    return []
  path, _, arg = config.partition(':')
  found = [(f'the config file {path}', path)]
  todo, seen = [path], {path}
  while todo:
    current = todo.pop()
    for module in _config_imports(current):
      if module not in seen:
        seen.add(module)
        todo.append(module)
        found.append((f'{module}, imported by {current},', module))
  for source in sorted(seen):
    found += [(f'{key}={value} (set in {source})', value)
              for key, value in _config_paths(source)]
  for item in arg.split(','):
    value = item.partition('=')[2]
    if '/' in value:
      found.append((f'{value} (in --config={config})', value))
  found += [(f'{key}={value}', value) for key, value in _flag_paths(extra)]
  return [(label, value) for label, value in found if '://' not in value]


def _repo_relative(value: str) -> tuple[str | None, str | None]:
  """(repo-relative path, None) or (None, why it cannot be shipped)."""
  expanded = os.path.expanduser(value)
  full = os.path.normpath(os.path.join(ROOT, expanded))
  inside = os.path.commonpath([full, ROOT]) == ROOT
  if not inside:
    return None, 'outside'
  if os.path.isabs(expanded):
    return None, 'absolute'
  return os.path.relpath(full, ROOT), None


def _porcelain(*args) -> list[tuple[str, str]]:
  """(XY code, path) of each entry of `git status --porcelain=v1 -z`."""
  entries, words, i = [], _git('status', '--porcelain=v1', '-z',
                               *args).split('\0'), 0
  while i < len(words):
    word = words[i]
    i += 1
    if len(word) >= 4:
      entries.append((word[:2], word[3:]))
      if word[0] in 'RC':  # A rename's source follows its target.
        i += 1
  return entries


def _status(paths) -> dict[str, str]:
  """{path: 'untracked' | 'ignored' | 'staged' | 'modified'}, worst first,
  for each of `paths` (a directory: any file below it)."""
  entries = []
  for code, name in _porcelain('--ignored=matching', '--untracked-files=all',
                               '--', *paths):
    kind = {'??': 'untracked', '!!': 'ignored'}.get(code)
    if kind is None:
      kind = 'staged' if code == 'A ' else 'modified'
    entries.append((name, kind))
  rank = ('untracked', 'ignored', 'staged', 'modified')
  status = {}
  for path in paths:
    # An entry is the path, a file below it, or (ignored or untracked as a
    # whole) a directory above it: 'workdirs/'.
    kinds = [k for n, k in entries
             if n == path or n.startswith(path.rstrip('/') + '/') or
             (n.endswith('/') and path.startswith(n))]
    if kinds:
      status[path] = min(kinds, key=rank.index)
  return status


def check_shipped(named):
  """Raises LaunchError naming the first of `named` ((label, path) pairs)
  that git archive HEAD would not ship as it is here."""
  problems, relative = [], []
  for label, value in named:
    path, why = _repo_relative(value)
    if why:
      problems.append((label, why))
    else:
      relative.append((label, path))
  if relative:
    if os.path.realpath(_git('rev-parse', '--show-toplevel').strip()) != (
        os.path.realpath(ROOT)):
      raise LaunchError(f'{ROOT} is not the top of a git checkout; the TPU '
                        'VMs get the code through git archive HEAD')
    paths = [p for _, p in relative]
    status = _status(paths)
    at_head = set(_git('ls-tree', '-r', '--name-only', '-z', 'HEAD', '--',
                       *paths).split('\0'))
    attributes = _git('check-attr', '-z', 'export-ignore', '--',
                      *paths).split('\0')
    excluded = {attributes[i] for i in range(0, len(attributes) - 2, 3)
                if attributes[i + 2] == 'set'}
    for label, path in relative:
      shipped = path in at_head or any(
          f.startswith(path + '/') for f in at_head)
      why = status.get(path) or ('export-ignore' if path in excluded else
                                 None if shipped else 'missing')
      if why:
        problems.append((label, why))
  if problems:
    label, why = problems[0]
    more = len(problems) - 1
    more = f' ({more} more such file{"s" * (more > 1)})' if more else ''
    raise LaunchError(f'{label} {_WHY[why]}{more}')


def tracked_changes() -> list[str]:
  """Tracked files whose work-tree or staged version differs from HEAD."""
  return [name for _, name in _porcelain('--untracked-files=no')]


def check_clean(allow_dirty: bool, dry_run: bool = False):
  """A shipping command refuses a dirty tree unless told: the VMs would run
  HEAD, not what is here. Allowed, a real run says so."""
  changed = tracked_changes()
  if not changed:
    return
  shown = ', '.join(changed[:3]) + (', ...' if len(changed) > 3 else '')
  if allow_dirty:
    if dry_run:  # Prints the commands only: nothing is shipped.
      return
    _note(f'--allow-dirty: shipping git HEAD without the uncommitted changes '
          f'to {len(changed)} tracked file{"s" * (len(changed) > 1)} '
          f'({shown})')
    return
  raise LaunchError(
      f'{len(changed)} tracked file{"s" * (len(changed) > 1)} '
      f'{"have" if len(changed) > 1 else "has"} uncommitted changes '
      f'({shown}): the TPU VMs get git HEAD without them; commit or stash '
      'them, or pass --allow-dirty to ship HEAD anyway')


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
