"""Tests for vidjax.layers.attention against independent numpy code.

The numpy references work on float64 copies of the layer's own parameters and
address TimeSformer tokens by index arithmetic (patch (s, t) is token
1 + s·T + t), independently of the einops regroupings in the layer.
"""

import functools
import math

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.errors import VidjaxError
from vidjax.layers import attention

B, D, HEADS = 2, 8, 2


# ----------------------------------------------------------------- references
def np_params(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def np_layer_norm(p, x, eps=1e-6):
  mean = x.mean(-1, keepdims=True)
  var = ((x - mean) ** 2).mean(-1, keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p['scale'] + p['bias']


def np_dense(p, x):
  return x @ p['kernel'] + (p['bias'] if 'bias' in p else 0.0)


def np_mhsa(p, x, num_heads):
  """One sequence x [L, D]; heads are explicit column slices of q, k, v."""
  length, dim = x.shape
  hd = dim // num_heads
  qkv = np_dense(p['qkv'], x)
  out = np.zeros((length, dim))
  weights = np.zeros((num_heads, length, length))
  for h in range(num_heads):
    q, k, v = (qkv[:, i * dim + h * hd:i * dim + (h + 1) * hd]
               for i in range(3))
    logits = q @ k.T / math.sqrt(hd)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    weights[h] = e / e.sum(-1, keepdims=True)
    out[:, h * hd:(h + 1) * hd] = weights[h] @ v
  return np_dense(p['proj'], out), weights


def np_divided(p, x, num_frames, num_heads, temporal=True):
  """The official divided block's attention part, token by token."""
  batch, length, _ = x.shape
  t_len = num_frames
  s_len = (length - 1) // t_len
  tok = lambda s, t: 1 + s * t_len + t
  xt = x.copy()
  if temporal:
    for b in range(batch):
      for s in range(s_len):
        idx = [tok(s, t) for t in range(t_len)]
        y, _ = np_mhsa(p['temporal_attn'],
                       np_layer_norm(p['temporal_norm1'], x[b, idx]),
                       num_heads)
        xt[b, idx] = x[b, idx] + np_dense(p['temporal_fc'], y)
  out = np.zeros_like(x)
  for b in range(batch):
    cls_update = 0.0
    for t in range(t_len):
      idx = [tok(s, t) for s in range(s_len)]
      seq = np.concatenate([x[b, :1], xt[b, idx]], axis=0)
      r, _ = np_mhsa(p['attn'], np_layer_norm(p['norm1'], seq), num_heads)
      cls_update = cls_update + r[0] / t_len
      out[b, idx] = xt[b, idx] + r[1:]
    out[b, 0] = x[b, 0] + cls_update
  return out


def np_gelu(x, exact=True):
  if exact:
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


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
  return jax.jit(layer.init)(jax.random.key(0), x)['params']


def random_params(layer, x, **kwargs):
  return randomize(jax.eval_shape(layer.init, jax.random.key(0), x)['params'],
                   **kwargs)


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
                                             qkv_bias=qkv_bias)
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
      np.testing.assert_allclose(out[b], expected, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(sown[b], weights, rtol=1e-5, atol=1e-6)

  def test_param_names_and_shapes(self):
    layer = attention.MultiHeadSelfAttention(num_heads=HEADS)
    params = jax.eval_shape(layer.init, jax.random.key(0),
                            jnp.zeros((1, 3, D)))['params']
    chex.assert_trees_all_equal_shapes(params, {
        'qkv': {'kernel': np.zeros((D, 3 * D)), 'bias': np.zeros(3 * D)},
        'proj': {'kernel': np.zeros((D, D)), 'bias': np.zeros(D)},
    })

  def test_width_not_divisible_by_heads(self):
    layer = attention.MultiHeadSelfAttention(num_heads=3)
    with self.assertRaises(VidjaxError):
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
    np.testing.assert_allclose(
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
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
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
    np.testing.assert_array_equal(layer.apply({}, x), x)  # eval: identity


class DividedSpaceTimeAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('s6_t4', B, 6, 4, HEADS),
  )
  def test_matches_numpy(self, batch, space, frames, num_heads):
    x = tokens((batch, 1 + space * frames, D))
    layer = attention.DividedSpaceTimeAttention(num_heads=num_heads,
                                                num_frames=frames)
    # Non-zero temporal_fc (and everything else) so both paths are exercised.
    params = random_params(layer, x)
    out = self.variant(layer.apply)({'params': params}, x)
    self.assertEqual(out.shape, x.shape)
    self.assertEqual(out.dtype, jnp.float32)
    expected = np_divided(np_params(params), x.astype(np.float64), frames,
                          num_heads)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  # Jit only: each new shape costs seconds of op-by-op compiles un-jitted.
  @parameterized.named_parameters(
      ('s4_t2_heads4', 1, 4, 2, 4),
      ('s2_t1', 1, 2, 1, HEADS),  # T=1, image-like input
  )
  def test_matches_numpy_other_shapes(self, batch, space, frames, num_heads):
    x = tokens((batch, 1 + space * frames, D))
    layer = attention.DividedSpaceTimeAttention(num_heads=num_heads,
                                                num_frames=frames)
    params = random_params(layer, x)
    out = jax.jit(layer.apply)({'params': params}, x)
    expected = np_divided(np_params(params), x.astype(np.float64), frames,
                          num_heads)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  def test_temporal_branch_matters_in_reference(self):
    # Guards the test above: with these parameters the temporal path changes
    # the output well beyond its tolerance.
    x = tokens((1, 1 + 4 * 4, D)).astype(np.float64)
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS, num_frames=4)
    p = np_params(random_params(layer, x))
    diff = np_divided(p, x, 4, HEADS) - np_divided(p, x, 4, HEADS,
                                                   temporal=False)
    self.assertGreater(np.abs(diff).max(), 0.1)

  def test_temporal_fc_zero_init_gives_spatial_only(self):
    frames, space = 4, 6
    x = tokens((B, 1 + space * frames, D))
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS,
                                                num_frames=frames)
    variables = {'params': init_params(layer, x)}
    fc = variables['params']['temporal_fc']
    np.testing.assert_array_equal(fc['kernel'], 0)
    np.testing.assert_array_equal(fc['bias'], 0)
    self.assertGreater(
        np.abs(variables['params']['temporal_attn']['qkv']['kernel']).max(), 0)

    out = jax.jit(layer.apply)(variables, x)
    expected = np_divided(np_params(variables['params']),
                          x.astype(np.float64), frames, HEADS, temporal=False)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  @parameterized.named_parameters(('time', 'time'), ('space', 'space'))
  def test_permutation_equivariance(self, axis):
    # S != T, so a layer that mixed up the (s t) order would break this.
    batch, space, frames = 2, 6, 4
    x = tokens((batch, 1 + space * frames, D))
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS,
                                                num_frames=frames)
    variables = {'params': random_params(layer, x)}
    rng = np.random.default_rng(7)
    perm = rng.permutation(frames if axis == 'time' else space)
    while np.all(perm == np.arange(perm.size)):
      perm = rng.permutation(perm.size)

    def permute(a):
      grid = a[:, 1:].reshape(batch, space, frames, D)
      grid = grid[:, :, perm] if axis == 'time' else grid[:, perm]
      return np.concatenate([a[:, :1], grid.reshape(batch, -1, D)], axis=1)

    apply = jax.jit(layer.apply)
    out = np.asarray(apply(variables, x))
    out_of_permuted = np.asarray(apply(variables, permute(x)))
    np.testing.assert_allclose(out_of_permuted, permute(out), rtol=1e-5,
                               atol=1e-5)
    # The class token averages over frames and attends over a set: invariant.
    np.testing.assert_allclose(out_of_permuted[:, 0], out[:, 0], rtol=1e-5,
                               atol=1e-5)
    self.assertGreater(np.abs(out_of_permuted[:, 1:] - out[:, 1:]).max(), 0.1)

  def test_param_names_shapes_and_count(self):
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS, num_frames=4)
    params = jax.eval_shape(layer.init, jax.random.key(0),
                            jnp.zeros((1, 17, D)))['params']
    attn = {'qkv': {'kernel': (D, 3 * D), 'bias': (3 * D,)},
            'proj': {'kernel': (D, D), 'bias': (D,)}}
    norm = {'scale': (D,), 'bias': (D,)}
    expected = {'temporal_norm1': norm, 'temporal_attn': attn,
                'temporal_fc': {'kernel': (D, D), 'bias': (D,)},
                'norm1': norm, 'attn': attn}
    self.assertEqual(jax.tree.map(lambda a: a.shape, params),
                     jax.tree.map(tuple, expected,
                                  is_leaf=lambda v: isinstance(v, tuple)))
    self.assertEqual(count_params(params), 2 * 288 + 2 * 16 + 72)

  def test_sows_both_attention_maps(self):
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS, num_frames=4)
    x = tokens((B, 1 + 6 * 4, D))
    variables = jax.eval_shape(layer.init, jax.random.key(0), x)
    _, state = jax.eval_shape(
        functools.partial(layer.apply, mutable=['intermediates']), variables,
        x)
    maps = jax.tree.map(lambda a: a.shape, state['intermediates'])
    self.assertEqual(maps, {'temporal_attn': {'attention': ((B * 6, HEADS, 4,
                                                              4),)},
                            'attn': {'attention': ((B * 4, HEADS, 7, 7),)}})

  def test_rejects_token_count(self):
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS, num_frames=4)
    with self.assertRaises(VidjaxError):
      # No class token: 16 tokens are not 1 + S·4.
      jax.eval_shape(layer.init, jax.random.key(0), jnp.zeros((1, 16, D)))

  def test_param_dtype(self):
    layer = attention.DividedSpaceTimeAttention(
        num_heads=HEADS, num_frames=4, param_dtype=jnp.bfloat16)
    variables = jax.eval_shape(layer.init, jax.random.key(0),
                               jnp.zeros((1, 17, D)))
    for leaf in jax.tree.leaves(variables):
      self.assertEqual(leaf.dtype, jnp.bfloat16)

  @chex.variants(with_jit=True, without_jit=True)
  def test_bfloat16_compute(self):
    # Mixed precision as trained: float32 parameters, bfloat16 compute.
    dtype = jnp.bfloat16
    x = tokens((B, 1 + 6 * 4, D))
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS, num_frames=4,
                                                dtype=dtype)
    params = random_params(layer, x)
    for leaf in jax.tree.leaves(params):
      self.assertEqual(leaf.dtype, jnp.float32)
    out = self.variant(layer.apply)({'params': params}, jnp.asarray(x, dtype))
    self.assertEqual(out.shape, x.shape)
    self.assertEqual(out.dtype, dtype)
    expected = np_divided(np_params(params), np.asarray(
        jnp.asarray(x, dtype), np.float64), 4, HEADS)
    # bfloat16 keeps ~3 significant digits; structural errors would be O(1).
    np.testing.assert_allclose(np.asarray(out, np.float32), expected,
                               rtol=0.05, atol=0.1)

  def test_drop_path_acts_in_training(self):
    x = tokens((B, 1 + 6 * 4, D))
    layer = attention.DividedSpaceTimeAttention(num_heads=HEADS, num_frames=4)
    variables = {'params': random_params(layer, x)}
    evaluated = np_divided(np_params(variables['params']),
                           x.astype(np.float64), 4, HEADS)
    dropping = attention.DividedSpaceTimeAttention(
        num_heads=HEADS, num_frames=4, drop_path_rate=0.5)
    trained = jax.jit(functools.partial(dropping.apply, train=True))(
        variables, x, rngs={'dropout': dropout_key(1)})
    self.assertGreater(np.abs(np.asarray(trained - evaluated)).max(), 1e-3)


class ResidualSelfAttentionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy(self):
    # Space-only layout, frames folded into the batch: [B·T, 1 + S, D]. Joint
    # attention passes [B, 1 + S·T, D] instead, the same computation.
    batch, length = B * 4, 1 + 6
    x = tokens((batch, length, D))
    layer = attention.ResidualSelfAttention(num_heads=HEADS)
    params = random_params(layer, x)
    self.assertSetEqual(set(params), {'norm1', 'attn'})
    out = self.variant(layer.apply)({'params': params}, x)
    p = np_params(params)
    for b in range(batch):
      xb = x[b].astype(np.float64)
      expected = xb + np_mhsa(p['attn'], np_layer_norm(p['norm1'], xb),
                              HEADS)[0]
      np.testing.assert_allclose(out[b], expected, rtol=1e-5, atol=1e-5)


if __name__ == '__main__':
  absltest.main()
