"""Tests for vidjax.layers.attention against independent numpy code.

The numpy references (tests/layers/attention_reference.py) work on float64
copies of the layer's own parameters.
"""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.layers import attention

B, D, HEADS = 2, 8, 2


from tests.layers.attention_reference import (  # pylint: disable=g-import-not-at-top,wrong-import-position
    np_dense, np_gelu, np_mhsa, np_params)


# ------------------------------------------------------------------- helpers
def tokens(shape, seed=0):
  return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def randomize(params, seed=1, scale=0.5):
  """Random values for every leaf, including zero-init ones and norm scales.

  Without this, a mix-up between the two LayerNorms or the two attentions
  would go unnoticed, since they share their initial values.
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    value = scale * rng.standard_normal(leaf.shape)
    if path[-1].key == 'scale':
      value += 1.0
    return jnp.asarray(value, leaf.dtype)

  return jax.tree_util.tree_map_with_path(draw, params)


def init_params(layer, x):
  # One jitted init: eager init compiles every op separately and costs seconds.
  return nn.unbox(jax.jit(layer.init)(jax.random.key(0), x))['params']


def random_params(layer, x, **kwargs):
  return randomize(nn.unbox(jax.eval_shape(
      layer.init, jax.random.key(0), x))['params'], **kwargs)


def dropout_key(seed):
  # Dropout semantics do not depend on the PRNG; 'rbg' compiles several times
  # faster than threefry on CPU.
  return jax.random.key(seed, impl='rbg')


def count_params(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


# --------------------------------------------------------------------- tests
class MultiHeadSelfAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('heads2', 2, True, 7),
      ('heads4_no_bias', 4, False, 3),
  )
  def test_matches_numpy(self, num_heads, qkv_bias, length):
    # [B·T, 1 + S, D], the shape of the divided layer's spatial attention, so
    # the un-jitted variant reuses op compilations across tests.
    x = tokens((B * 4, length, D))
    layer = attention.MultiHeadSelfAttention(num_heads=num_heads,
                                             qkv_bias=qkv_bias,
                                             sow_weights=True)
    params = random_params(layer, x)
    self.assertEqual('bias' in params['qkv'], qkv_bias)
    out, state = self.variant(functools.partial(
        layer.apply, mutable=['intermediates']))({'params': params}, x)
    (sown,) = state['intermediates']['attention']

    self.assertEqual(out.shape, (B * 4, length, D))
    self.assertEqual(sown.shape, (B * 4, num_heads, length, length))
    p = np_params(params)
    for b in range(B * 4):
      expected, weights = np_mhsa(p, x[b].astype(np.float64), num_heads)
      chex.assert_trees_all_close(out[b], expected, rtol=1e-5, atol=1e-5)
      chex.assert_trees_all_close(sown[b], weights, rtol=1e-5, atol=1e-6)

  @parameterized.named_parameters(('unmasked', False), ('masked', True))
  def test_fused_path_equals_explicit_weights(self, masked):
    # Without sow_weights the layer runs jax.nn.dot_product_attention and
    # never builds the weights; with it, explicit softmax. Same values, and
    # leading axes beyond one batch axis fold in.
    x = tokens((2, 3, 5, D))
    mask = np.tril(np.ones((5, 5), bool)) if masked else None
    fused = attention.MultiHeadSelfAttention(num_heads=HEADS)
    explicit = fused.clone(sow_weights=True)
    params = random_params(fused, x)
    out = jax.jit(lambda p, x: fused.apply({'params': p}, x, mask=mask))(
        params, x)
    want, state = explicit.apply({'params': params}, x, mask=mask,
                                 mutable=['intermediates'])
    chex.assert_trees_all_close(out, want, rtol=1e-5, atol=1e-6)
    (weights,) = state['intermediates']['attention']
    self.assertEqual(weights.shape, (2, 3, HEADS, 5, 5))
    if masked:  # Query i attends to keys <= i only.
      chex.assert_trees_all_equal(np.asarray(weights)[..., ~mask], 0)
    p = np_params(params)
    expected, _ = np_mhsa(p, x[1, 2].astype(np.float64), HEADS,
                          mask=mask)
    chex.assert_trees_all_close(out[1, 2], expected, rtol=1e-5, atol=1e-5)
    _, state = fused.apply({'params': params}, x, mutable=['intermediates'])
    self.assertEmpty(state)  # Nothing sown unless asked.

  def test_param_names_and_shapes(self):
    layer = attention.MultiHeadSelfAttention(num_heads=HEADS)
    params = nn.unbox(jax.eval_shape(layer.init, jax.random.key(0),
                                     jnp.zeros((1, 3, D))))['params']
    chex.assert_trees_all_equal_shapes(params, {
        'qkv': {'kernel': np.zeros((D, 3 * D)), 'bias': np.zeros(3 * D)},
        'proj': {'kernel': np.zeros((D, D)), 'bias': np.zeros(D)},
    })

  def test_width_not_divisible_by_heads(self):
    layer = attention.MultiHeadSelfAttention(num_heads=3)
    with self.assertRaises(ValueError):
      jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 3, D)))

  def test_attention_dropout_only_in_training(self):
    x = tokens((B, 5, D))
    layer = attention.MultiHeadSelfAttention(num_heads=HEADS,
                                             attention_dropout_rate=0.5)
    variables = {'params': init_params(layer, x)}
    rngs = {'dropout': dropout_key(3)}
    apply = jax.jit(layer.apply, static_argnames='train')
    evaluated = apply(variables, x, rngs=rngs)
    trained = apply(variables, x, train=True, rngs=rngs)
    p = np_params(variables['params'])
    chex.assert_trees_all_close(
        evaluated[0], np_mhsa(p, x[0].astype(np.float64), HEADS)[0],
        rtol=1e-5, atol=1e-5)
    self.assertGreater(np.abs(np.asarray(trained - evaluated)).max(), 1e-3)


class MlpTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_exact_gelu(self):
    x = tokens((B, 5, D))
    layer = attention.Mlp(hidden_dim=4 * D)
    # Scale 1 puts fc1 outputs around ±3, where erf and tanh GELU differ.
    params = random_params(layer, x, scale=1.0)
    out = self.variant(layer.apply)({'params': params}, x)
    self.assertEqual(out.shape, (B, 5, D))

    p = np_params(params)
    h = np_dense(p['fc1'], x.astype(np.float64))
    expected = np_dense(p['fc2'], np_gelu(h))
    chex.assert_trees_all_close(out, expected, rtol=1e-5, atol=1e-5)
    # The tolerance above does separate the exact GELU from the tanh one.
    tanh_version = np_dense(p['fc2'], np_gelu(h, exact=False))
    self.assertGreater(np.abs(tanh_version - expected).max(), 1e-3)

  def test_out_dim(self):
    layer = attention.Mlp(hidden_dim=16, out_dim=4)
    x = jnp.zeros((1, 3, D))
    variables = jax.eval_shape(layer.init, jax.random.key(0), x)
    self.assertEqual(jax.eval_shape(layer.apply, variables, x).shape,
                     (1, 3, 4))
    self.assertEqual(count_params(variables), D * 16 + 16 + 16 * 4 + 4)


class DenseOnRowsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_and_gradients_equal_numpy(self):
    # Rows or not, the layer computes x·W + b and its gradients: against
    # numpy's, with the weight gradient summed over every leading axis.
    x = tokens((2, 3, 5, D))
    layer = nn.Dense(6, name='fc')
    variables = {'params': random_params(layer, x, scale=1.0)}
    cotangent = tokens((2, 3, 5, 6), seed=1)

    def loss(params, x):
      y = attention.dense_on_rows(layer.bind({'params': params}), x)
      return jnp.sum(y * cotangent), y

    (_, y), (d_params, dx) = self.variant(
        jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
            variables['params'], x)
    kernel = np.asarray(variables['params']['kernel'], np.float64)
    bias = np.asarray(variables['params']['bias'], np.float64)
    chex.assert_shape(y, (2, 3, 5, 6))
    chex.assert_trees_all_close(y, x @ kernel + bias, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(
        d_params['kernel'], np.einsum('abld,ablf->df', x, cotangent),
        rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(d_params['bias'], cotangent.sum((0, 1, 2)),
                                rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(dx, cotangent @ kernel.T, rtol=1e-5,
                                atol=1e-5)


class DropPathTest(parameterized.TestCase):

  def test_drops_whole_rows(self):
    x = jnp.ones((64, 3, 4))
    layer = attention.DropPath(rate=0.5)
    out = np.asarray(layer.apply({}, x, train=True,
                                 rngs={'dropout': dropout_key(0)}))
    row_values = out.reshape(64, -1)
    # Each row is entirely dropped (0) or entirely kept and rescaled (2).
    self.assertTrue(np.all(row_values == row_values[:, :1]))
    self.assertSetEqual(set(np.unique(row_values)), {0.0, 2.0})
    chex.assert_trees_all_equal(layer.apply({}, x), x)  # eval: identity


if __name__ == '__main__':
  absltest.main()
