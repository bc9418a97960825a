"""BatchNormReLU against relu(flax.linen.BatchNorm): variables, values,
running statistics, dtypes (its gradients: tests/kernels/test_norm.py)."""
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


def _ours(train, use_scale, relu=True, kernels='custom'):
  return BatchNormReLU(use_running_average=not train, momentum=0.9,
                       epsilon=1e-3, use_scale=use_scale, relu=relu,
                       kernels=kernels, name='bn')


class _Wrapped(nn.Module):
  train: bool
  use_scale: bool
  relu: bool = True
  kernels: str = 'custom'

  @nn.compact
  def __call__(self, x):
    return _ours(self.train, self.use_scale, self.relu, self.kernels)(x)


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
