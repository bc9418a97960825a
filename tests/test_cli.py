"""Every command line's shared start-up and error handler (vidjax/cli.py).

Subprocesses, as users run them: `--help` exits 0, a bad flag is one error
line, a CPU run does not wake libtpu, and vidjax.main's XLA:CPU flags are
set only where the user set none. In-process: the exit codes and lines of
`cli.run` itself.
"""
import os
import subprocess
import sys
import textwrap

from absl import app
from absl import flags
import ml_collections
import pytest

from vidjax import cli
from vidjax import platform
from vidjax.errors import VidjaxError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ('vidjax.main', 'vidjax.stream', 'vidjax.convert',
            'vidjax.data.prepare', 'vidjax.tools.aot', 'vidjax.tools.profile',
            'vidjax.predict', 'vidjax.features', 'vidjax.export',
            'vidjax.explain')
# A flag each command defines, so its help must list it.
OWN_FLAG = {'vidjax.main': '--workdir', 'vidjax.stream': '--checkpoint',
            'vidjax.convert': '--torch',
            'vidjax.data.prepare': '--manual_dir',
            'vidjax.tools.aot': '--topology',
            'vidjax.tools.profile': '--frames',
            # Its own flag, and one the inference commands share.
            'vidjax.predict': '--window_s', 'vidjax.features': '--layer',
            'vidjax.export': '--out', 'vidjax.explain': '--method'}
SHARED_FLAG = {c: '--checkpoint' for c in (
    'vidjax.stream', 'vidjax.predict', 'vidjax.features', 'vidjax.export',
    'vidjax.explain')}


def run_python(args, *, drop=(), timeout=300, **env_extra):
  """`python ARGS` from the repo; `drop` removes variables conftest set."""
  env = {k: v for k, v in os.environ.items() if k not in drop}
  env.update(PYTHONPATH=REPO, **env_extra)
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize('command', COMMANDS)
def test_help_exits_0_with_the_commands_flags(command):
  proc = run_python(['-m', command, '--help'])
  assert proc.returncode == 0, proc.stderr
  assert OWN_FLAG[command] in proc.stdout, proc.stdout
  assert SHARED_FLAG.get(command, OWN_FLAG[command]) in proc.stdout
  assert '--[no]verbose: Show tracebacks' in proc.stdout, proc.stdout
  assert 'python -m ' + command in proc.stdout, proc.stdout[:300]
  assert proc.stderr == '', proc.stderr


@pytest.mark.parametrize('command', COMMANDS)
def test_bad_flag_is_one_error_line(command):
  proc = run_python(['-m', command, '--no_such_flag=1'])
  assert proc.returncode == 1, proc.stderr
  assert proc.stderr.splitlines() == [
      "vidjax: error: Unknown command line flag 'no_such_flag'"], proc.stderr
  assert proc.stdout == ''


def test_helpfull_and_h_exit_0():
  full = run_python(['-m', 'vidjax.tools.profile', '--helpfull'])
  assert full.returncode == 0, full.stderr
  # Every flag: absl's own too, which --help leaves out.
  assert '--frames' in full.stdout and 'logtostderr' in full.stdout
  short = run_python(['-m', 'vidjax.tools.profile', '-h'])
  assert short.returncode == 0, short.stderr
  assert '--frames' in short.stdout and 'logtostderr' not in short.stdout


def test_verbose_shows_the_traceback():
  quiet = run_python(['-m', 'vidjax.tools.profile', '--model=no_such_model'])
  assert quiet.returncode == 1
  assert len(quiet.stderr.splitlines()) == 1, quiet.stderr
  assert quiet.stderr.startswith('vidjax: error: ')
  loud = run_python(['-m', 'vidjax.tools.profile', '--model=no_such_model',
                     '--verbose'])
  assert loud.returncode == 1
  assert 'Traceback' in loud.stderr and 'no_such_model' in loud.stderr


def test_profile_on_a_cpu_machine_says_nothing_of_libtpu():
  """The test environment has libtpu and no TPU: JAX must not try it."""
  pytest.importorskip('libtpu', reason='libtpu not installed')
  if platform.tpu_attached():
    pytest.skip('a TPU is attached')
  proc = run_python(['-m', 'vidjax.tools.profile', '--model=s3dg',
                     '--frames=8', '--size=64', '--num_classes=13',
                     '--nocompile'],
                    drop=('JAX_PLATFORMS', 'TF_CPP_MIN_LOG_LEVEL'))
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == '', proc.stderr
  assert proc.stdout.startswith('model        s3dg'), proc.stdout


# ---------------------------------------------------------------------------
# XLA:CPU flags by default.

# A 3x3 conv of 64 channels: XLA's defaults hand it to YNNPACK; under
# CPU_TRAINING_XLA_FLAGS (dots and reductions only) XLA's own conv runs it.
# So the compiled program shows which flags XLA started with.
_CONV_SCRIPT = textwrap.dedent('''\
    import os
    from vidjax import cli, platform

    def main(argv):
      import jax
      x, w = jax.numpy.ones((4, 16, 16, 64)), jax.numpy.ones((3, 3, 64, 64))
      conv = lambda x, w: jax.lax.conv_general_dilated(
          x, w, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      hlo = jax.jit(conv).lower(x, w).compile().as_text()
      print(repr(os.environ.get('XLA_FLAGS')), 'ynn' in hlo,
            jax.device_count())

    cli.run(main, cpu_xla_flags=platform.CPU_TRAINING_XLA_FLAGS)
    ''')


def run_conv(**xla_flags):
  return run_python(['-c', _CONV_SCRIPT], drop=('XLA_FLAGS',),
                    JAX_PLATFORMS='cpu', **xla_flags)


def test_cpu_flags_applied_when_xla_flags_unset():
  proc = run_conv()
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == [
      repr(platform.CPU_TRAINING_XLA_FLAGS), 'False', '1'], proc.stdout
  notes = [l for l in proc.stderr.splitlines() if 'XLA_FLAGS' in l]
  assert len(notes) == 1, proc.stderr
  assert ('vidjax: XLA_FLAGS unset; using the measured CPU flags '
          f'{platform.CPU_TRAINING_XLA_FLAGS}') in notes[0]


@pytest.mark.parametrize(
    'users', ['', '--xla_force_host_platform_device_count=2'])
def test_users_xla_flags_untouched(users):
  proc = run_conv(XLA_FLAGS=users)
  assert proc.returncode == 0, proc.stderr
  devices = '2' if users else '1'
  # XLA's default fusions (the conv in YNNPACK) and the user's flags.
  assert proc.stdout.split() == [repr(users), 'True', devices], proc.stdout
  assert 'XLA_FLAGS' not in proc.stderr, proc.stderr


def test_main_uses_the_cpu_flags_and_says_so_once(tmp_path):
  proc = run_python(['-m', 'vidjax.main', '--config=configs/demo.py',
                     f'--workdir={tmp_path}/wd',
                     '--config.data.name=no_such_dataset'],
                    drop=('XLA_FLAGS',), JAX_PLATFORMS='cpu')
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  notes = [l for l in lines if 'XLA_FLAGS unset' in l]
  assert len(notes) == 1, proc.stderr
  assert platform.CPU_TRAINING_XLA_FLAGS in notes[0]
  assert lines[-1].startswith('vidjax: error: ') and 'no_such_dataset' in (
      lines[-1]), proc.stderr


def test_runs_on_cpu_follows_jax_platforms(monkeypatch):
  monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
  assert platform.runs_on_cpu()
  monkeypatch.setenv('JAX_PLATFORMS', 'tpu')
  assert not platform.runs_on_cpu()
  monkeypatch.delenv('XLA_FLAGS', raising=False)
  assert not platform.use_cpu_xla_flags('--xla_cpu_flag_for_a_test')
  assert 'XLA_FLAGS' not in os.environ


# ---------------------------------------------------------------------------
# cli.run in-process, on its own FlagValues (as vidjax.stream uses it).


def run_in_process(main, *args):
  fv = flags.FlagValues()
  flags.DEFINE_string('name', None, 'A flag.', flag_values=fv)
  return cli.run(main, ['prog', *args], flag_values=fv)


def test_main_return_value_and_flags(capsys):
  assert run_in_process(lambda argv: argv, '--name=x', 'rest') == [
      'prog', 'rest']


class Preempted(VidjaxError):
  exit_code = 75


@pytest.mark.parametrize('error,code,line', [
    (VidjaxError('bad  input\n  here'), 1, 'vidjax: error: bad input here'),
    (Preempted('saved; rerun'), 75, 'vidjax: error: saved; rerun'),
    (app.UsageError('unexpected arguments: x'), 1,
     'vidjax: error: unexpected arguments: x'),
])
def test_user_errors_are_one_line_with_their_exit_code(capsys, error, code,
                                                       line):
  def main(argv):
    raise error
  with pytest.raises(SystemExit) as exit_info:
    run_in_process(main)
  assert exit_info.value.code == code
  assert capsys.readouterr().err.splitlines() == [line]
  with pytest.raises(type(error)):
    run_in_process(main, '--verbose')


def test_bugs_keep_their_traceback():
  def main(argv):
    raise ZeroDivisionError('a bug')
  with pytest.raises(ZeroDivisionError):
    run_in_process(main)


def test_help_in_process(capsys):
  with pytest.raises(SystemExit) as exit_info:
    run_in_process(lambda argv: 0, '--help')
  assert exit_info.value.code == 0
  out = capsys.readouterr().out
  assert out.startswith(__doc__.splitlines()[0]) and '--name' in out


def test_describe_config_load_errors():
  missing = FileNotFoundError(2, 'No such file or directory', 'c.py')
  assert cli.describe(RuntimeError('wrapped')) == 'wrapped'
  wrapped = RuntimeError('flag')
  wrapped.__cause__ = missing
  assert cli.describe(wrapped) == (
      'cannot read config file c.py: No such file or directory')
  assert cli.describe(KeyError("'no_such_key'")) == (
      "unknown config key 'no_such_key'")
  # What ml_collections raises for `--config.batch_sizee=3`: the key and its
  # suggestion, unescaped, on one line.
  config = ml_collections.ConfigDict({'batch_size': 1})
  for lookup in (lambda: config.batch_sizee, lambda: config['batch_sizee']):
    with pytest.raises((KeyError, AttributeError)) as error:
      lookup()
    assert cli.describe(error.value) == (
        "unknown config key 'batch_sizee'; Did you mean \"batch_size\" "
        'instead of "batch_sizee"?')
  # A VidjaxError says what it says, whatever caused it.
  error = VidjaxError('labels.csv: cannot read')
  error.__cause__ = missing
  assert cli.describe(error) == 'labels.csv: cannot read'


# ---------------------------------------------------------------------------
# The environment's faults: one line naming the path and the errno text.

def test_os_errors_are_one_line_naming_the_path(capsys):
  def main(argv):
    raise OSError(28, 'No space left on device', '/data/out/report.json')
  with pytest.raises(SystemExit) as exit_info:
    run_in_process(main)
  assert exit_info.value.code == 1
  assert capsys.readouterr().err.splitlines() == [
      'vidjax: error: /data/out/report.json: No space left on device']
  with pytest.raises(OSError):
    run_in_process(main, '--verbose')


def test_full_standard_output_is_one_line():
  # `> file` on a full disk: /dev/full fails every write with ENOSPC.
  if not os.path.exists('/dev/full'):
    pytest.skip('needs /dev/full')
  with open('/dev/full', 'w') as full:
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, '-m', 'vidjax.tools.profile', '--model=s3dg',
         '--frames=8', '--size=64', '--num_classes=13', '--nocompile'],
        cwd=REPO, env=env, stdout=full, stderr=subprocess.PIPE, text=True,
        timeout=300)
  assert proc.returncode == 1
  assert proc.stderr.splitlines() == [
      'vidjax: error: cannot write the standard output: No space left on '
      'device'], proc.stderr
