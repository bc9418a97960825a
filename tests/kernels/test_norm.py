"""The BN+ReLU kernels' gradients against autodiff through
relu(flax.linen.BatchNorm), through the layer that uses them (BatchNormReLU;
its variables and values: tests/layers/test_norm.py)."""
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests.layers.test_norm import _Reference, _variables, _Wrapped
from vidjax.kernels import KERNEL_SETS


class BatchNormReLUGradientTest(chex.TestCase, parameterized.TestCase):

  def _input(self, rng, shape=(2, 3, 5, 4, 6)):
    # An offset mean and unequal channel scales, as conv outputs have.
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=shape[-1]) + 0.7
    return x.astype(np.float32)

  @parameterized.product(use_scale=(True, False),
                         shape=((2, 3, 5, 4, 6), (4, 7, 16)),
                         relu=(True, False), kernels=KERNEL_SETS)
  def test_training_gradients_equal_autodiff_through_flax(self, use_scale,
                                                           shape, relu,
                                                           kernels):
    rng = np.random.default_rng(1)
    x = self._input(rng, shape)
    variables = _variables(rng, x.shape[-1], use_scale)
    cotangent = rng.normal(size=x.shape).astype(np.float32)

    def grads(module):
      def loss(params, x):
        y, _ = module.apply({'params': params,
                             'batch_stats': variables['batch_stats']}, x,
                            mutable=['batch_stats'])
        return jnp.sum(y * cotangent)
      return jax.grad(loss, argnums=(0, 1))(variables['params'], x)

    got = grads(_Wrapped(True, use_scale, relu, kernels))
    want = grads(_Reference(True, use_scale, relu))
    chex.assert_trees_all_close(got, want, rtol=2e-4, atol=2e-5)

  def test_gradient_is_zero_where_the_relu_is_off(self):
    # relu'(0) = 0 as in jax.nn.relu: a channel whose normalised input is
    # negative everywhere (bias -10) passes no gradient to x.
    rng = np.random.default_rng(2)
    x = self._input(rng, (2, 4, 3))
    variables = _variables(rng, 3, True)
    variables['params']['bn']['bias'][1] = -10.0

    def loss(x):
      y, _ = _Wrapped(True, True).apply(variables, x,
                                        mutable=['batch_stats'])
      return jnp.sum(y)

    dx = jax.grad(loss)(x)
    chex.assert_trees_all_equal(dx[..., 1], 0.0)

  def test_gradient_is_as_accurate_as_autodiff_far_from_zero_mean(self):
    # d scale is computed as (Σ g·x - μ Σ g) / σ, which loses digits when
    # |μ| >> σ. Against a float64 reference, it must stay as accurate as
    # float32 autodiff through nn.BatchNorm (whose E[x²] - E[x]² variance
    # loses the same digits).
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, 6, 6, 8)) + 20.0
    cotangent = rng.normal(size=x.shape)

    def grads(module, dtype):
      variables = jax.tree.map(lambda a: a.astype(dtype), nn.unbox(module.init(
          jax.random.key(0), jnp.zeros((1, 1, 1, 1, 8), dtype))))

      def loss(params, x):
        y, _ = module.apply({'params': params,
                             'batch_stats': variables['batch_stats']}, x,
                            mutable=['batch_stats'])
        return jnp.sum(y * cotangent.astype(dtype))
      return jax.grad(loss, argnums=(0, 1))(variables['params'],
                                            x.astype(dtype))

    with jax.enable_x64(True):
      truth = grads(_Reference(True, True), jnp.float64)
      want = grads(_Reference(True, True), jnp.float32)
      got = grads(_Wrapped(True, True), jnp.float32)
    for g, w, t in zip(*map(jax.tree.leaves, (got, want, truth))):
      t = np.asarray(t)
      error = lambda a: np.linalg.norm(np.asarray(a, np.float64) - t)  # noqa: E731
      self.assertLessEqual(error(g), 2 * error(w) + 1e-7 * np.linalg.norm(t))
