"""Bad input to `python -m vidjax.main`: one clear line, non-zero exit."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args, env_extra=None):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3',
             **(env_extra or {}))
  return subprocess.run([sys.executable, '-m', 'vidjax.main', *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def assert_one_clear_error(proc, *needles):
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr, proc.stderr
  text = proc.stderr + proc.stdout
  for needle in needles:
    assert needle in text, text


def test_missing_config_file(tmp_path):
  proc = run_main('--config=configs/no_such.py', f'--workdir={tmp_path}')
  assert_one_clear_error(proc, 'no_such.py')


def test_unknown_config_key(tmp_path):
  proc = run_main('--config=configs/demo.py', f'--workdir={tmp_path}',
                  '--config.no_such_key=3')
  assert_one_clear_error(proc, 'no_such_key')


# A config file of its own, as users write them: the schema (vidjax/config.py)
# answers its mistakes at load, before anything is built.
_TYPO = """from configs import demo


def get_config():
  config = demo.get_config()
  config.data.num_frame = 16
  return config
"""
_WRONG_TYPE = _TYPO.replace('num_frame = 16', "num_frames = '16'")


@pytest.mark.parametrize('flag,config_file,needle', [
    ('--config.batch_sizee=3', None, 'batch_sizee'),
    ('--config.checkpoint_every_steps=0', None,
     'config.checkpoint_every_steps=0 must be > 0'),
    ("--config.best_mode=maximum", None,
     "config.best_mode='maximum' must be 'max' or 'min'"),
    (None, _TYPO, 'config.data.num_frame=16 is not a config key'),
    (None, _WRONG_TYPE,
     "config.data.num_frames='16' is a str; expected int"),
    # A bad `path:arg` argument (configs/arguments.py).
    (None, 'configs/kinetics400_tsm.py:segments=12',
     'segments must be one of (8, 16), got 12'),
])
def test_bad_config_is_one_line_at_load(tmp_path, flag, config_file, needle):
  path = 'configs/demo.py'
  if config_file and config_file.startswith('configs/'):
    path = config_file
  elif config_file:
    path = tmp_path / 'my_config.py'
    path.write_text(config_file)
  proc = run_main(f'--config={path}', f'--workdir={tmp_path}/wd',
                  *([flag] if flag else []))
  assert proc.returncode == 1
  assert_one_clear_error(proc, 'vidjax: error:', needle)
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
  assert not os.path.exists(tmp_path / 'wd')  # Failed before the workdir.


def test_missing_workdir_flag():
  proc = run_main('--config=configs/demo.py')
  assert_one_clear_error(proc, 'workdir')


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / 'a_file'
  blocker.write_text('not a directory')
  proc = run_main('--config=configs/demo.py', f'--workdir={blocker}/sub')
  assert_one_clear_error(proc, 'vidjax: error: workdir', 'not writable')
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.fixture(scope='module')
def prepared_data_dir(tmp_path_factory):
  """The tiny dataset, rendered beforehand: rendering rightly prints a
  progress bar, which is not what these tests look at."""
  from vidjax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vidjax.data import sources  # pylint: disable=g-import-not-at-top
  data_dir = tmp_path_factory.mktemp('tfds')
  config = config_lib.default_config().data
  config.name = 'moving_shapes/tiny'
  config.data_dir = str(data_dir)
  sources.prepare(config)
  return data_dir


@pytest.mark.parametrize('flag,needle', [
    ('--config.data.eval_split=no_such_split', "no split 'no_such_split'"),
    ('--config.data.name=no_such_dataset', 'no_such_dataset'),
    ('--config.model_name=no_such_model', "unknown model 'no_such_model'"),
    ('--config.mesh.time=3', 'not divisible by 3'),
    ('--config.batch_size=12', 'not divisible by the data axis'),
    ("--config.logical_axis_rules=(('time','space'),)",
     "unknown mesh axis 'space'"),
])
def test_bad_data_or_model(tmp_path, prepared_data_dir, flag, needle):
  proc = run_main('--config=configs/demo.py', f'--workdir={tmp_path}/wd',
                  '--config.data.name=moving_shapes/tiny',
                  f'--config.data.data_dir={prepared_data_dir}', flag)
  assert_one_clear_error(proc, 'vidjax: error:', needle)
  assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_libtpu_says_nothing_on_a_cpu_run(tmp_path):
  """The test environment has jax[tpu]; a CPU run must not show libtpu."""
  pytest.importorskip('libtpu', reason='libtpu not installed')
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  proc = subprocess.run(
      [sys.executable, '-m', 'vidjax.main', '--config=configs/demo.py',
       f'--workdir={tmp_path}/wd', '--config.data.name=no_such_dataset'],
      cwd=REPO, env=dict(env, PYTHONPATH=REPO), capture_output=True,
      text=True, timeout=300)
  assert_one_clear_error(proc, 'no_such_dataset')
  assert proc.stderr.strip().splitlines() == [
      line for line in proc.stderr.strip().splitlines()
      if line.startswith('vidjax: error:')], proc.stderr
  assert 'TPU' not in proc.stderr, proc.stderr
