"""Tests for vidjax.layers.shift against independent numpy loops."""

import functools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.layers import shift

N, T, H, W, C = 2, 4, 2, 2, 8


def np_shift(x, fold_div=8, direction='bidirectional'):
  """Reference: a per-(frame, channel) loop that reads the source frame."""
  t_len, channels = x.shape[1], x.shape[-1]
  fold = channels // fold_div
  out = np.zeros_like(x)
  for t in range(t_len):
    for ch in range(channels):
      src = t
      if ch < fold:
        src = t - 1 if direction == 'right' else t + 1
      elif ch < 2 * fold and direction == 'bidirectional':
        src = t - 1
      if 0 <= src < t_len:
        out[:, t, ..., ch] = x[:, src, ..., ch]
  return out


def positive_clip(shape=(N, T, H, W, C), seed=0):
  # Strictly positive, so a zero in the output can only come from the shift.
  return 1.0 + np.random.default_rng(seed).random(shape, dtype=np.float32)


class TemporalShiftTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('bidir_div8', 8, 'bidirectional', 8),
      ('bidir_div4', 4, 'bidirectional', 8),
      ('bidir_div3_uneven', 3, 'bidirectional', 8),
      ('bidir_div2_all_channels', 2, 'bidirectional', 8),
      ('bidir_div8_c16', 8, 'bidirectional', 16),
      ('left_div4', 4, 'left', 8),
      ('right_div4', 4, 'right', 8),
      ('right_div1', 1, 'right', 8),
  )
  def test_matches_numpy(self, fold_div, direction, channels):
    x = positive_clip((N, T, H, W, channels))
    fn = self.variant(functools.partial(
        shift.temporal_shift, fold_div=fold_div, direction=direction))
    out = fn(jnp.asarray(x))
    chex.assert_trees_all_equal(np.asarray(out), np_shift(x, fold_div,
                                                          direction))

  def test_official_convention_by_hand(self):
    # One pixel, C=8, fold_div=4 (fold 2): values encode (t, c) as 10·t + c.
    x = (10 * np.arange(T)[:, None] + np.arange(C)[None, :]).astype(np.float32)
    x = x.reshape(1, T, 1, 1, C)
    out = np.asarray(shift.temporal_shift(jnp.asarray(x), fold_div=4))
    expected_t1 = np.array([20, 21, 2, 3, 14, 15, 16, 17],
                           np.float32)  # c<2 from t=2, c<4 from t=0
    chex.assert_trees_all_equal(out[0, 1, 0, 0], expected_t1)

  def test_boundary_frames_are_zero(self):
    x = positive_clip()
    fold = C // 4
    out = np.asarray(shift.temporal_shift(jnp.asarray(x), fold_div=4))
    chex.assert_trees_all_equal(out[:, -1, ..., :fold], 0)
    chex.assert_trees_all_equal(out[:, 0, ..., fold:2 * fold], 0)
    # Nothing else is zero: inputs are positive and no other slot is vacated.
    self.assertEqual(np.count_nonzero(out == 0), 2 * N * H * W * fold)

  def test_fewer_channels_than_fold_div_is_identity(self):
    x = positive_clip((1, T, 1, 1, 4))
    out = shift.temporal_shift(jnp.asarray(x), fold_div=8)
    chex.assert_trees_all_equal(np.asarray(out), x)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('float32', jnp.float32),
      ('bfloat16', jnp.bfloat16),
  )
  def test_shape_and_dtype(self, dtype):
    x = jnp.asarray(positive_clip(), dtype)
    out = self.variant(shift.temporal_shift)(x)
    self.assertEqual(out.shape, x.shape)
    self.assertEqual(out.dtype, dtype)
    # The shift only moves values, so it is exact in any dtype.
    chex.assert_trees_all_equal(
        np.asarray(out, np.float32), np_shift(np.asarray(x, np.float32)))

  def test_gradient_is_the_opposite_shift(self):
    # The official InplaceShift.backward shifts the cotangent the other way.
    x = jnp.asarray(positive_clip())
    g = positive_clip(seed=1)
    _, vjp = jax.vjp(functools.partial(shift.temporal_shift, fold_div=4), x)
    (grad,) = vjp(jnp.asarray(g))
    fold = C // 4
    expected = g.copy()
    expected[:, 0, ..., :fold] = 0
    expected[:, 1:, ..., :fold] = g[:, :-1, ..., :fold]
    expected[:, -1, ..., fold:2 * fold] = 0
    expected[:, :-1, ..., fold:2 * fold] = g[:, 1:, ..., fold:2 * fold]
    chex.assert_trees_all_equal(np.asarray(grad), expected)

  @chex.variants(with_jit=True, without_jit=True)
  def test_folded_batch_matches_nthwc(self):
    x = positive_clip()
    folded = x.reshape(N * T, H, W, C)
    out = self.variant(functools.partial(
        shift.temporal_shift_folded, num_frames=T, fold_div=4))(folded)
    self.assertEqual(out.shape, (N * T, H, W, C))
    chex.assert_trees_all_equal(
        np.asarray(out).reshape(N, T, H, W, C), np_shift(x, fold_div=4))

  def test_folded_batch_rejects_bad_num_frames(self):
    with self.assertRaises(ValueError):
      shift.temporal_shift_folded(jnp.zeros((6, H, W, C)), num_frames=4)

  def test_bad_arguments(self):
    x = jnp.zeros((N, T, H, W, C))
    with self.assertRaises(ValueError):
      shift.temporal_shift(x, direction='up')
    with self.assertRaises(ValueError):
      shift.temporal_shift(x, fold_div=1)  # bidirectional needs 2·fold <= C
    with self.assertRaises(ValueError):
      shift.temporal_shift(x, fold_div=0, direction='left')

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('nthwc', None, 'bidirectional'),
      ('folded', T, 'bidirectional'),
      ('folded_right', T, 'right'),
  )
  def test_module(self, num_frames, mode):
    x = positive_clip()
    inputs = x if num_frames is None else x.reshape(N * T, H, W, C)
    layer = shift.TemporalShift(fold_div=4, mode=mode, num_frames=num_frames)
    variables = layer.init(jax.random.key(0), inputs)
    self.assertEmpty(jax.tree.leaves(variables))  # parameter-free
    out = self.variant(layer.apply)(variables, jnp.asarray(inputs))
    chex.assert_trees_all_equal(
        np.asarray(out).reshape(x.shape), np_shift(x, 4, mode))


class OnlineShiftTest(chex.TestCase):

  def test_init_buffer(self):
    buf = shift.init_shift_buffer((N, H, W, 16), fold_div=8,
                                  dtype=jnp.bfloat16)
    self.assertEqual(buf.shape, (N, H, W, 2))
    self.assertEqual(buf.dtype, jnp.bfloat16)
    chex.assert_trees_all_equal(np.asarray(buf, np.float32), 0)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('div8', 8), ('div4', 4), ('div2', 2))
  def test_online_equals_offline_causal_shift(self, fold_div):
    x = positive_clip()
    step = self.variant(shift.online_temporal_shift)
    buf = shift.init_shift_buffer((N, H, W, C), fold_div=fold_div)
    outs = []
    for t in range(T):
      frame = jnp.asarray(x[:, t])
      y, buf = step(frame, buf)
      # The new buffer is this frame's unshifted first fold channels.
      chex.assert_trees_all_equal(np.asarray(buf),
                                  x[:, t, ..., :C // fold_div])
      outs.append(np.asarray(y))
    online = np.stack(outs, axis=1)
    chex.assert_trees_all_equal(online, np_shift(x, fold_div, 'right'))
    offline = shift.temporal_shift(jnp.asarray(x), fold_div=fold_div,
                                   direction='right')
    chex.assert_trees_all_equal(online, np.asarray(offline))

  def test_online_rejects_mismatched_buffer(self):
    with self.assertRaises(ValueError):
      shift.online_temporal_shift(jnp.zeros((N, H, W, C)),
                                  jnp.zeros((N, H + 1, W, 1)))

  def test_online_module_streams_through_cache(self):
    x = positive_clip()
    layer = shift.OnlineTemporalShift(fold_div=4)
    variables = layer.init(jax.random.key(0), jnp.asarray(x[:, 0]))
    chex.assert_trees_all_equal(
        np.asarray(variables['cache']['shift_buffer']), 0)
    apply = jax.jit(functools.partial(layer.apply, mutable=['cache']))
    outs = []
    for t in range(T):
      y, mutated = apply(variables, jnp.asarray(x[:, t]))
      variables = {**variables, **mutated}
      outs.append(np.asarray(y))
    chex.assert_trees_all_equal(np.stack(outs, 1), np_shift(x, 4, 'right'))


class Affine(nn.Module):
  """A fixed linear map on channels, standing in for a conv."""
  features: int = C
  scale: float = 1.0

  @nn.compact
  def __call__(self, x):
    return nn.Dense(self.features,
                    kernel_init=nn.initializers.normal(self.scale),
                    bias_init=nn.initializers.normal(self.scale),
                    name='dense')(x)


class AffineBlock(shift.ShiftedResidual, kw_only=True):
  """A ShiftedResidual whose branch and projection are `Affine` maps."""
  projection: bool = False
  relu: bool = False

  def branch(self, x, train):
    del train
    return Affine(name='conv1')(x)

  def shortcut(self, x, train):
    del train
    return Affine(scale=0.5, name='downsample')(x) if self.projection else x

  def activation(self, y):
    return nn.relu(y) if self.relu else y


class TwoBlocks(nn.Module):
  """Blocks inside a parent's compact method: where auto-naming used to bite."""

  @nn.compact
  def __call__(self, x):
    x = AffineBlock(projection=True, fold_div=4, name='block0')(x)
    return AffineBlock(fold_div=4, name='block1')(x)


def dense_np(params, x):
  return x @ np.asarray(params['dense']['kernel']) + np.asarray(
      params['dense']['bias'])


class ShiftedResidualTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('residual', 'residual', False, False),
      ('in_place', 'in_place', False, False),
      ('residual_projection_relu', 'residual', True, True),
      ('in_place_projection_relu', 'in_place', True, True),
  )
  def test_matches_numpy(self, placement, projection, relu):
    x = positive_clip() - 1.5  # both signs, so the ReLU matters
    block = AffineBlock(placement=placement, projection=projection,
                        relu=relu, fold_div=4)
    variables = block.init(jax.random.key(0), jnp.asarray(x))
    out = self.variant(functools.partial(block.apply, train=True))(
        variables, jnp.asarray(x))

    params = variables['params']
    s = np_shift(x, fold_div=4)
    identity = x if placement == 'residual' else s
    if projection:
      identity = dense_np(params['downsample'], identity)
    expected = identity + dense_np(params['conv1'], s)
    if relu:
      expected = np.maximum(expected, 0)
    chex.assert_trees_all_close(np.asarray(out), expected, rtol=1e-5,
                                atol=1e-5)

  def test_parameter_names_follow_the_blocks(self):
    variables = TwoBlocks().init(jax.random.key(0), jnp.zeros((N, T, H, W, C)))
    names = {'/'.join(k) for k in flax.traverse_util.flatten_dict(
        variables['params'])}
    self.assertEqual(names, {
        'block0/conv1/dense/kernel', 'block0/conv1/dense/bias',
        'block0/downsample/dense/kernel', 'block0/downsample/dense/bias',
        'block1/conv1/dense/kernel', 'block1/conv1/dense/bias'})

  def test_placements_differ_only_on_shifted_channels(self):
    x = positive_clip()
    outs = {}
    for placement in shift.PLACEMENTS:
      block = AffineBlock(placement=placement, fold_div=4)
      variables = block.init(jax.random.key(0), jnp.asarray(x))
      outs[placement] = np.asarray(block.apply(variables, jnp.asarray(x)))
    # in_place − residual = shift(x) − x, which vanishes on unshifted channels.
    chex.assert_trees_all_close(outs['in_place'] - outs['residual'],
                                np_shift(x, fold_div=4) - x, atol=1e-5)
    self.assertGreater(np.abs(outs['in_place'] - outs['residual']).max(), 0.5)

  def test_folded_frames(self):
    x = positive_clip()
    block = AffineBlock(fold_div=4, num_frames=T)
    folded = jnp.asarray(x.reshape(N * T, H, W, C))
    variables = block.init(jax.random.key(0), folded)
    out = block.apply(variables, folded)
    expected = x + dense_np(variables['params']['conv1'], np_shift(x, 4))
    chex.assert_trees_all_close(np.asarray(out).reshape(x.shape), expected,
                                rtol=1e-5, atol=1e-5)

  def test_buffer_streams_the_causal_shift(self):
    x = positive_clip()
    block = AffineBlock(fold_div=4, mode='right')
    variables = block.init(jax.random.key(0), jnp.asarray(x))
    offline = np.asarray(block.apply(variables, jnp.asarray(x)))
    buffer = jnp.zeros((N, 1, H, W, C // 4))
    for t in range(T):
      y, buffer = block.apply(variables, jnp.asarray(x[:, t:t + 1]),
                              buffer=buffer)
      chex.assert_trees_all_close(np.asarray(y), offline[:, t:t + 1],
                                  rtol=1e-6, atol=1e-6)
    with self.assertRaises(ValueError):  # the offline shift reads ahead
      AffineBlock(fold_div=4).apply(variables, jnp.asarray(x[:, :1]),
                                    buffer=buffer)

  def test_bad_placement(self):
    block = AffineBlock(placement='block')
    with self.assertRaises(ValueError):
      block.init(jax.random.key(0), jnp.zeros((N, T, H, W, C)))


if __name__ == '__main__':
  absltest.main()
