"""The 3-D conv kernels against numpy and XLA's own 3-D conv."""
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.kernels import conv as conv_kernels
from vidjax.kernels import KERNEL_SETS
from vidjax.layers import conv as conv_lib


def numpy_conv3d(x, kernel, strides, pads):
  """Direct loop-free-ish NTHWC conv: sum over taps of shifted products."""
  x = np.pad(x, [(0, 0), *pads, (0, 0)])
  kt, kh, kw, _, c_out = kernel.shape
  n, t, h, w, _ = x.shape
  st, sh, sw = strides
  ot, oh, ow = ((t - kt) // st + 1, (h - kh) // sh + 1, (w - kw) // sw + 1)
  y = np.zeros((n, ot, oh, ow, c_out), np.float64)
  for a in range(kt):
    for b in range(kh):
      for c in range(kw):
        patch = x[:, a:a + st * (ot - 1) + 1:st, b:b + sh * (oh - 1) + 1:sh,
                  c:c + sw * (ow - 1) + 1:sw]
        y += patch @ kernel[a, b, c]
  return y


class Conv3DTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ('pointwise', (1, 1, 1), (1, 1, 1)),
      ('spatial', (1, 3, 3), (1, 2, 2)),
      ('temporal', (3, 1, 1), (2, 1, 1)),
      ('full', (3, 3, 3), (1, 1, 1)),
      ('stem', (3, 7, 7), (2, 2, 2)))
  def test_every_lowering_matches_numpy(self, kernel_size, strides):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 9, 8, 3)).astype(np.float32)
    kernel = rng.normal(size=(*kernel_size, 3, 4)).astype(np.float32)
    pads = conv_lib.explicit_padding('SAME', x.shape[1:4], kernel_size,
                                     strides)
    want = numpy_conv3d(x, kernel, strides, pads)
    for kernels in KERNEL_SETS:
      got = jax.jit(conv_kernels.conv3d, static_argnums=(2, 3, 4))(
          x, kernel, strides, tuple(pads), kernels)
      chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-4)

  @parameterized.named_parameters(
      ('stem_tf_same', 7, 2, 'SAME', 9),
      ('stem_torch', 7, 2, 'SYMMETRIC', 8),
      ('stem_torch_16', 7, 2, 'SYMMETRIC', 16),
      ('short_clip', 7, 2, 'SAME', 3),
      ('one_frame', 7, 2, 'SYMMETRIC', 1),
      ('valid', 3, 2, 'VALID', 8),
      ('k3_s3', 3, 3, 'SAME', 10),
      ('k2_s3', 2, 3, 'SAME', 7))
  def test_strided_temporal_conv_equals_a_plain_3d_conv(
      self, kt, stride, padding, frames):
    # A strided temporal conv runs as a sum of stride-1 convs over frame
    # phases (conv.py); its values and both gradients must equal XLA's own
    # 3-D conv.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, frames, 3, 4, 5)).astype(np.float32)
    kernel = rng.normal(size=(kt, 1, 1, 5, 6)).astype(np.float32)
    strides = (stride, 1, 1)
    pads = tuple(conv_lib.explicit_padding(padding, x.shape[1:4],
                                           (kt, 1, 1), strides))
    y_shape = jax.eval_shape(
        lambda a, k: conv_kernels.conv3d(a, k, strides, pads), x, kernel).shape
    cotangent = rng.normal(size=y_shape).astype(np.float32)

    def grads(conv):
      return jax.grad(lambda a, k: jnp.sum(conv(a, k) * cotangent),
                      argnums=(0, 1))(x, kernel)

    ours = lambda a, k: conv_kernels.conv3d(a, k, strides, pads)  # noqa: E731
    reference = lambda a, k: jax.lax.conv_general_dilated(  # noqa: E731
        a, k, strides, pads, dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
    chex.assert_trees_all_close(ours(x, kernel), reference(x, kernel),
                                rtol=1e-4, atol=1e-4)
    for got, want in zip(grads(ours), grads(reference)):
      chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-4)

  @parameterized.named_parameters(
      ('pointwise', (1, 1, 1)),
      ('projection_stride_2', (1, 2, 2)),
      ('stride_2_by_3', (1, 2, 3)))
  def test_1x1_conv_gradients_equal_xla_and_numpy(self, strides):
    # The 1×1 paths have a hand-written VJP and subsample strided inputs
    # (conv.py): values and both gradients must equal XLA's 3-D conv, and
    # the weight gradient the numpy sum over frames and pixels.
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 7, 6, 5)).astype(np.float32)
    kernel = rng.normal(size=(1, 1, 1, 5, 4)).astype(np.float32)
    pads = ((0, 0),) * 3
    ours = lambda a, k: conv_kernels.conv3d(a, k, strides, pads)  # noqa: E731
    reference = lambda a, k: jax.lax.conv_general_dilated(  # noqa: E731
        a, k, strides, pads, dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
    y = jax.jit(ours)(x, kernel)
    chex.assert_trees_all_close(y, reference(x, kernel), rtol=1e-5, atol=1e-5)
    cotangent = rng.normal(size=y.shape).astype(np.float32)

    def grads(conv):
      return jax.jit(jax.grad(lambda a, k: jnp.sum(conv(a, k) * cotangent),
                              argnums=(0, 1)))(x, kernel)

    (dx, dk), (dx_ref, dk_ref) = grads(ours), grads(reference)
    chex.assert_trees_all_close(dx, dx_ref, rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(dk, dk_ref, rtol=1e-5, atol=1e-5)
    sub = x[:, ::strides[0], ::strides[1], ::strides[2]]
    chex.assert_trees_all_close(
        dk[0, 0, 0], np.einsum('nthwc,nthwd->cd', sub, cotangent),
        rtol=1e-4, atol=1e-4)

  @parameterized.named_parameters(
      ('two_pixels', (2, 2), (1, 1), 'SYMMETRIC', True),
      ('one_pixel', (1, 1), (1, 1), 'SYMMETRIC', True),
      ('strided_to_two', (3, 3), (2, 2), 'SYMMETRIC', True),
      ('tall_and_narrow', (5, 2), (1, 2), 'SAME', True),
      ('wide_enough', (4, 5), (1, 1), 'SYMMETRIC', False),
      ('full_3d_two_pixels', (2, 2), (1, 1), 'SYMMETRIC', True, 3),
      ('full_3d_strided', (3, 3), (2, 2), 'SAME', True, 3, 2),
      ('full_3d_wide_enough', (4, 4), (1, 1), 'SYMMETRIC', False, 3))
  def test_a_conv_narrower_than_its_kernel_is_one_matmul(
      self, hw, strides, padding, narrow, kt=1, st=1):
    # Below the kernel's size in height or width a kt×3×3 conv runs as a
    # matmul over its windows (conv.py: Eigen's conv is ~100× slower
    # there). Values and both gradients equal numpy's conv and XLA's own.
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, *hw, 5)).astype(np.float32)
    kernel = rng.normal(size=(kt, 3, 3, 5, 4)).astype(np.float32)
    strides = (st, *strides)
    pads = tuple(conv_lib.explicit_padding(padding, x.shape[1:4],
                                           (kt, 3, 3), strides))
    ours = lambda a, k: conv_kernels.conv3d(a, k, strides, pads)  # noqa: E731
    reference = lambda a, k: jax.lax.conv_general_dilated(  # noqa: E731
        a, k, strides, pads, dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
    hlo = jax.jit(ours).lower(x, kernel).as_text()
    self.assertEqual('convolution' not in hlo, narrow)
    y = jax.jit(ours)(x, kernel)
    chex.assert_trees_all_close(y, numpy_conv3d(x, kernel, strides, pads),
                                rtol=1e-5, atol=1e-5)
    cotangent = rng.normal(size=y.shape).astype(np.float32)

    def grads(conv):
      return jax.jit(jax.grad(lambda a, k: jnp.sum(conv(a, k) * cotangent),
                              argnums=(0, 1)))(x, kernel)

    for got, want in zip(grads(ours), grads(reference)):
      chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)
