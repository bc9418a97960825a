"""Loading any config must not import TensorFlow or JAX (they cost seconds at
start-up and configs only describe runs): vidjax/config.py's promise."""
import glob
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(os.path.basename(p)[:-3]
                 for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))
                 if not os.path.basename(p).startswith(('_', 'arguments')))

_PROBE = """
import sys
sys.path.insert(0, {repo!r})
import importlib
for name in {names!r}:
  module = importlib.import_module('configs.' + name)
  if hasattr(module, 'get_config'):
    module.get_config()
print(sorted(m for m in sys.modules
             if m.split('.')[0] in ('tensorflow', 'jax', 'flax')))
"""


def test_no_config_imports_tensorflow_or_jax():
  assert 'demo' in CONFIGS and len(CONFIGS) > 5
  out = subprocess.run(
      [sys.executable, '-c', _PROBE.format(repo=REPO, names=CONFIGS)],
      capture_output=True, text=True, timeout=300, check=True).stdout
  assert out.strip().splitlines()[-1] == '[]', out


def _main(tmp_path, *flags):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run(
      [sys.executable, '-m', 'vidjax.main', '--config=configs/demo.py',
       f'--workdir={tmp_path}/wd', *flags],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(proc) -> str:
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('vidjax: error: '), (
      proc.stderr)
  return lines[0]


def test_a_bad_value_ends_at_load(tmp_path):
  """num_frames=0 (like frame_stride=0 and checkpoint_every_steps=0,
  tests/test_configs.py) ends at load: no workdir, nothing compiled."""
  proc = _main(tmp_path, '--config.data.num_frames=0')
  assert _one_error_line(proc) == (
      'vidjax: error: config.data.num_frames=0 must be > 0')
  assert not os.path.exists(tmp_path / 'wd')


def test_the_preflight_runs_before_compiling(tmp_path):
  """Labels past num_classes in the training shards: one line before the
  model is built (no checkpoint directory, no step), not a run that skips
  most records as bad_label."""
  from tests.data import records as R  # pylint: disable=g-import-not-at-top
  R.write_shards(str(tmp_path), 'train',
                 [R.record(v, 2, v % 4) for v in range(4)], 1)
  R.write_shards(str(tmp_path), 'validation',
                 [R.record(v, 2, v % 2) for v in range(2)], 1)
  proc = _main(tmp_path, '--config.data.name=tfrecord',
               f'--config.data.train_pattern={tmp_path}/train-*',
               f'--config.data.eval_pattern={tmp_path}/validation-*',
               '--config.data.eval_split=validation',
               '--config.data.num_classes=2')
  assert _one_error_line(proc) == (
      "vidjax: error: 2 of the 4 records sampled from split 'train' (the "
      'first 4 of each shard) have labels outside [0, 2) '
      '(config.data.num_classes=2), e.g. record 2 of '
      f'{tmp_path}/train-00000-of-00001 has label 2; such records are '
      'skipped as bad_label')
  assert 'step' not in proc.stdout
  assert not os.path.exists(tmp_path / 'wd' / 'checkpoints')
