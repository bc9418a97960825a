"""The YNNPACK-threads reproduction: its conv, sides and flags (no timing)."""
import os
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from benchmarks import harness
from benchmarks import ynn_conv_threads
from vidjax.errors import VidjaxError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _numpy_conv_relu(x, kernel):
  """3×3 'SAME' cross-correlation + ReLU, one output pixel at a time."""
  n, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  out = np.zeros((n, h, w, kernel.shape[-1]), np.float64)
  for i in range(h):
    for j in range(w):
      out[:, i, j] = np.einsum('nabc,abcd->nd', padded[:, i:i + 3, j:j + 3],
                               kernel)
  return np.maximum(out, 0)


@pytest.mark.parametrize('extra', [0, 1, 2])
def test_the_padded_and_cropped_conv_is_the_same_conv(extra):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((2, 5, 6, 3)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 3, 4)).astype(np.float32)
  y = jax.jit(ynn_conv_threads.conv_relu, static_argnums=2)(x, kernel, extra)
  chex.assert_shape(y, (2, 5, 6, 4))
  chex.assert_trees_all_close(y, _numpy_conv_relu(x, kernel).astype(
      np.float32), rtol=1e-5, atol=1e-5)


def test_each_case_runs_on_all_cpus_and_on_one_under_xla_defaults():
  args = ynn_conv_threads._parse(['--iters=4', '--warmup=1'])
  every, one = ynn_conv_threads.sides(args, 'out64-eigen')
  assert (every.name, one.name) == ('all CPUs', 'one CPU')
  for s, cpus in ((every, 'all'), (one, 'one')):
    assert s.argv[1] == os.path.abspath(ynn_conv_threads.__file__)
    assert {'--case=out64-eigen', f'--cpus={cpus}', '--iters=4',
            '--warmup=1'} <= set(s.argv)
    assert s.env == {'XLA_FLAGS': None}


def test_bad_flags():
  with pytest.raises(VidjaxError, match='--iters must be >= 1'):
    ynn_conv_threads._parse(['--iters=0'])
  with pytest.raises(VidjaxError, match='unknown --cases out32'):
    harness.choose('out32', ynn_conv_threads.CASES, 'cases')


def test_a_bad_case_is_one_error_line():
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'benchmarks', 'ynn_conv_threads.py'),
       '--cases=out32'], capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      'vidjax: error: unknown --cases out32; known: out64, out128, '
      'out64-eigen']
