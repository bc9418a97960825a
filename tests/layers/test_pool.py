"""layers.pool.max_pool: its checks, and either kernel set behind it (the
kernels themselves: tests/kernels/test_pool.py)."""
from absl.testing import parameterized
import chex
import jax.numpy as jnp
import numpy as np

from tests.kernels.test_pool import _numpy_max_pool
from vidjax.kernels import KERNEL_SETS
from vidjax.layers import pool


class MaxPoolLayerTest(parameterized.TestCase):

  @parameterized.parameters(*KERNEL_SETS)
  def test_values_match_numpy(self, kernels):
    # A temporal window (the halo path) and a spatial-only one.
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 6, 3)).astype(
        np.float32)
    for window, strides, padding in (
        ((3, 3, 3), (2, 2, 2), ((0, 1), (0, 1), (0, 1))),
        ((1, 3, 3), (1, 2, 2), ((0, 0), (1, 1), (1, 1)))):
      y = pool.max_pool(x, window, strides, padding, kernels)
      chex.assert_trees_all_equal(y, _numpy_max_pool(x, window, strides,
                                                     padding))

  def test_rejects_a_window_per_axis_missing(self):
    with self.assertRaisesRegex(ValueError, 'one window, stride and padding'):
      pool.max_pool(jnp.zeros((1, 2, 4, 4, 1)), (3, 3), (1, 1),
                    ((0, 0),) * 2)
