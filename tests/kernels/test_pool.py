"""The separable max-pool (custom VJP) against flax's reduce_window pool
and numpy."""
import itertools

from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.kernels import pool

# (window, strides, padding): every pool of the Inception family, plus odd
# sizes and asymmetric padding.
CASES = (
    ('branch3', (3, 3, 3), (1, 1, 1), ((1, 1), (1, 1), (1, 1))),
    ('maxpool_2a_tf', (1, 3, 3), (1, 2, 2), ((0, 0), (0, 1), (0, 1))),
    ('maxpool_4a_tf', (3, 3, 3), (2, 2, 2), ((0, 1), (0, 1), (0, 1))),
    ('maxpool_5a', (2, 2, 2), (2, 2, 2), ((0, 0), (0, 0), (0, 0))),
    ('symmetric_s2', (3, 3, 3), (2, 2, 2), ((1, 1), (1, 1), (1, 1))),
    ('valid_s3', (2, 3, 1), (1, 3, 1), ((0, 0), (0, 0), (0, 0))),
    # Windows shorter than the stride: some inputs no window reads.
    ('gaps', (1, 2, 3), (2, 3, 2), ((0, 0), (1, 0), (0, 1))),
)


def _numpy_max_pool(x, window, strides, padding):
  x = np.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-np.inf)
  out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:4], window, strides)]
  y = np.empty((x.shape[0], *out, x.shape[-1]), x.dtype)
  for o in itertools.product(*map(range, out)):
    lo = [i * s for i, s in zip(o, strides)]
    patch = x[:, lo[0]:lo[0] + window[0], lo[1]:lo[1] + window[1],
              lo[2]:lo[2] + window[2]]
    y[(slice(None), *o)] = patch.max(axis=(1, 2, 3))
  return y


class MaxPoolTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*CASES)
  def test_values_match_numpy(self, window, strides, padding):
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 6, 3)).astype(
        np.float32)
    y = self.variant(lambda v: pool.max_pool(v, window, strides, padding))(x)
    chex.assert_trees_all_equal(y, _numpy_max_pool(x, window, strides,
                                                   padding))
    chex.assert_type(y, jnp.float32)

  @parameterized.named_parameters(*CASES)
  def test_gradient_equals_reduce_window(self, window, strides, padding):
    # Integer-valued inputs make ties common: the first maximum of a window
    # must take the whole gradient, exactly as select_and_scatter routes it.
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=(2, 5, 7, 6, 3)).astype(np.float32)
    cotangent = rng.normal(size=_numpy_max_pool(x, window, strides,
                                                padding).shape)

    def grad(pool_fn):
      return jax.grad(lambda v: jnp.sum(pool_fn(v) * cotangent))(x)

    ours = grad(lambda v: pool.max_pool(v, window, strides, padding))
    reference = grad(lambda v: nn.max_pool(v, window, strides, padding))
    chex.assert_trees_all_close(ours, reference, rtol=1e-6, atol=1e-6)
    # Every output's gradient lands on exactly one input.
    chex.assert_trees_all_close(ours.sum(), cotangent.sum(), rtol=1e-5)

  def test_rejects_a_window_larger_than_the_input(self):
    with self.assertRaisesRegex(ValueError, 'larger than the padded input'):
      pool.max_pool(jnp.zeros((1, 2, 4, 4, 1)), (3, 3, 3), (1, 1, 1),
                    ((0, 0),) * 3)
