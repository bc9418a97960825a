"""Conv units against numpy/lax references (the convs themselves:
tests/kernels/test_conv.py)."""
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.layers import conv as conv_lib


class PaddingTest(parameterized.TestCase):

  @parameterized.parameters(
      # (size, kernel, stride, TF's (lo, hi)) worked out by hand.
      (224, 7, 2, (2, 3)), (112, 3, 2, (0, 1)), (56, 3, 1, (1, 1)),
      (16, 2, 2, (0, 0)), (15, 2, 2, (0, 1)), (5, 7, 2, (3, 3)))
  def test_tf_same_padding(self, size, kernel, stride, expected):
    self.assertEqual(conv_lib.tf_same_padding(size, kernel, stride), expected)

  def test_symmetric_padding_is_torch_k_minus_1_over_2(self):
    self.assertEqual([conv_lib.symmetric_padding(k) for k in (1, 2, 3, 7)],
                     [(0, 0), (0, 0), (1, 1), (3, 3)])


class STConvTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('2d', '2d', {'conv': (1, 3, 3, 4, 8)}),
      ('3d', '3d', {'conv': (3, 3, 3, 4, 8)}),
      ('sep', 'sep', {'conv': (1, 3, 3, 4, 8), 'temporal': (3, 1, 1, 8, 8)}))
  def test_shapes_and_kernels(self, kind, kernels):
    unit = conv_lib.STConv(8, 3, temporal_kernel_size=3, kind=kind, stride=2)
    x = jnp.ones((1, 4, 16, 16, 4))
    variables = nn.unbox(unit.init(jax.random.key(0), x))
    y = self.variant(lambda v, x: unit.apply(v, x))(variables, x)
    chex.assert_shape(y, (1, 2 if kind != '2d' else 4, 8, 8, 8))
    chex.assert_type(y, jnp.float32)
    got = {k: v['kernel'].shape for k, v in variables['params'].items()
           if 'kernel' in v}
    self.assertEqual(got, kernels)
    # TF-slim numerics: BN has beta but no gamma; the temporal conv a bias.
    self.assertEqual(set(variables['params']['bn']), {'bias'})
    if kind == 'sep':
      self.assertIn('bias', variables['params']['temporal'])

  def test_separable_with_temporal_kernel_1_is_a_per_frame_2d_conv(self):
    unit = conv_lib.STConv(6, 3, temporal_kernel_size=1, kind='sep')
    x = np.random.default_rng(1).normal(size=(2, 4, 10, 10, 3)).astype(
        np.float32)
    variables = nn.unbox(unit.init(jax.random.key(0), x))
    y = unit.apply(variables, x)
    kernel = np.asarray(variables['params']['conv']['kernel'])[0]
    beta = np.asarray(variables['params']['bn']['bias'])
    eps = 1e-3  # Running stats start at mean 0, var 1.
    for t in range(x.shape[1]):
      frame = jax.lax.conv_general_dilated(
          x[:, t], kernel, (1, 1), 'SAME',
          dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
      want = np.maximum(np.asarray(frame) / np.sqrt(1 + eps) + beta, 0)
      chex.assert_trees_all_close(y[:, t], want, rtol=1e-5, atol=1e-5)

  def test_temporal_identity_init_makes_sep_start_as_its_spatial_half(self):
    unit = conv_lib.STConv(5, 3, temporal_kernel_size=3, kind='sep')
    x = np.random.default_rng(2).normal(size=(1, 6, 8, 8, 2)).astype(
        np.float32)
    variables = nn.unbox(unit.init(jax.random.key(0), x))
    spatial = conv_lib.STConv(5, 3, kind='2d')
    y_spatial = spatial.apply(
        {'params': {k: variables['params'][k] for k in ('conv', 'bn')},
         'batch_stats': variables['batch_stats']}, x)
    # temporal conv is identity (+ zero bias), then ReLU of a ReLU output.
    chex.assert_trees_all_close(unit.apply(variables, x), y_spatial,
                                rtol=1e-6, atol=1e-6)

  def test_torchvision_numerics(self):
    unit = conv_lib.STConv(8, 3, temporal_kernel_size=3, kind='sep',
                           numerics=conv_lib.TORCHVISION)
    variables = nn.unbox(unit.init(jax.random.key(0), jnp.ones((1, 4, 8, 8, 3))))
    params = variables['params']
    self.assertEqual(set(params), {'conv', 'bn', 'temporal', 'temporal_bn'})
    self.assertEqual(set(params['temporal']), {'kernel'})
    self.assertEqual(set(params['bn']), {'scale', 'bias'})

  def test_bad_kind(self):
    with self.assertRaisesRegex(ValueError, 'kind must be one of'):
      conv_lib.STConv(4, 3, kind='4d').init(jax.random.key(0),
                                            jnp.ones((1, 2, 4, 4, 1)))
