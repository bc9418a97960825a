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
