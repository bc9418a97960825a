"""BatchNormReLU (hand-written gradient) against relu(flax.linen.BatchNorm)."""
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.layers.norm import BatchNormReLU


class _Reference(nn.Module):
  """What BatchNormReLU replaces: autodiff through nn.BatchNorm and nn.relu."""
  train: bool
  use_scale: bool
  relu: bool = True

  @nn.compact
  def __call__(self, x):
    bn = nn.BatchNorm(use_running_average=not self.train, momentum=0.9,
                      epsilon=1e-3, use_scale=self.use_scale, name='bn')
    return nn.relu(bn(x)) if self.relu else bn(x)


def _ours(train, use_scale, relu=True):
  return BatchNormReLU(use_running_average=not train, momentum=0.9,
                       epsilon=1e-3, use_scale=use_scale, relu=relu, name='bn')


class _Wrapped(nn.Module):
  train: bool
  use_scale: bool
  relu: bool = True

  @nn.compact
  def __call__(self, x):
    return _ours(self.train, self.use_scale, self.relu)(x)


def _variables(rng, channels, use_scale):
  params = {'bias': rng.normal(size=channels).astype(np.float32)}
  if use_scale:
    params['scale'] = rng.normal(1.0, 0.5, size=channels).astype(np.float32)
  stats = {'mean': rng.normal(size=channels).astype(np.float32),
           'var': rng.uniform(0.5, 2.0, size=channels).astype(np.float32)}
  return {'params': {'bn': params}, 'batch_stats': {'bn': stats}}


class BatchNormReLUTest(chex.TestCase, parameterized.TestCase):

  def _input(self, rng, shape=(2, 3, 5, 4, 6)):
    # An offset mean and unequal channel scales, as conv outputs have.
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=shape[-1]) + 0.7
    return x.astype(np.float32)

  def test_variables_are_batch_norms(self):
    x = jnp.zeros((1, 2, 3, 3, 4))
    ours = jax.eval_shape(lambda *a: nn.unbox(_Wrapped(True, True).init(*a)),
                          jax.random.key(0), x)
    reference = jax.eval_shape(_Reference(True, True).init,
                               jax.random.key(0), x)
    chex.assert_trees_all_equal_shapes_and_dtypes(ours, reference)

  @parameterized.product(train=(True, False), use_scale=(True, False),
                         relu=(True, False))
  def test_values_and_running_statistics_equal_flax(self, train, use_scale,
                                                    relu):
    rng = np.random.default_rng(0)
    x = self._input(rng)
    variables = _variables(rng, x.shape[-1], use_scale)
    got, got_state = _Wrapped(train, use_scale, relu).apply(
        variables, x, mutable=['batch_stats'])
    want, want_state = _Reference(train, use_scale, relu).apply(
        variables, x, mutable=['batch_stats'])
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(got_state, want_state, rtol=1e-5, atol=1e-6)

  @parameterized.product(use_scale=(True, False),
                         shape=((2, 3, 5, 4, 6), (4, 7, 16)),
                         relu=(True, False))
  def test_training_gradients_equal_autodiff_through_flax(self, use_scale,
                                                           shape, relu):
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

    got = grads(_Wrapped(True, use_scale, relu))
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

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_compute_keeps_float32_statistics(self):
    rng = np.random.default_rng(3)
    x = self._input(rng).astype(jnp.bfloat16)
    module = BatchNormReLU(momentum=0.9, epsilon=1e-3, dtype=jnp.bfloat16)
    variables = nn.unbox(module.init(jax.random.key(0), x))
    y, state = self.variant(lambda v, x: module.apply(
        v, x, mutable=['batch_stats']))(variables, x)
    chex.assert_type(y, jnp.bfloat16)
    chex.assert_type(state['batch_stats']['mean'], jnp.float32)
    reference = nn.BatchNorm(momentum=0.9, epsilon=1e-3,
                             use_running_average=False)
    want = nn.relu(reference.apply(variables, x.astype(jnp.float32),
                                   mutable=['batch_stats'])[0])
    chex.assert_trees_all_close(np.asarray(y, np.float32), want, rtol=2e-2,
                                atol=2e-2)
    # The gradient comes back in the input's dtype.
    dx = jax.grad(lambda x: module.apply(
        variables, x, mutable=['batch_stats'])[0].astype(jnp.float32).sum())(x)
    chex.assert_type(dx, jnp.bfloat16)

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
