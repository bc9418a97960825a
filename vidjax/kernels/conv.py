"""3-D convolutions of NTHWC video, lowered by kernel shape or as one XLA op.

The kernel is a 5-D array [kt, kh, kw, c_in, c_out] whichever set runs it,
so checkpoints and converters see one parameter layout. 'plain' runs every
conv as one `lax.conv_general_dilated`. 'custom' chooses the lowering per
kernel shape, because XLA:CPU runs the same maths at very different speeds
(see benchmarks/): a 1×k×k conv folds time into the batch and runs as a 2-D
conv, a kt×1×1 conv folds height and width into one axis and runs as a 2-D
conv with a (kt, 1) window, a 1×1×1 conv is a matmul, and only genuine
k×k×k kernels run as 3-D convs. A conv whose input or output is narrower
than its window in height or width (ResNet's layer4 on small clips, I3D's
last blocks) runs as one matmul over its windows.

These are local ops on one device's frames; vidjax/layers/conv.py runs them
time-sharded with halo frames.
"""
import itertools
from typing import Sequence

import jax
import jax.numpy as jnp

from vidjax.kernels import selection


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
           padding: Sequence[tuple[int, int]],
           kernels: str = 'custom') -> jax.Array:
  """A 3-D conv of NTHWC `x` with explicit (lo, hi) padding per axis.

  By kernel shape with 'custom' (module doc), as one XLA 3-D conv with
  'plain'; 'auto' by the platform (selection.DEFAULT_KERNELS).
  """
  strides = tuple(strides)
  padding = [tuple(p) for p in padding]
  if selection.resolve(kernels) == 'plain':
    return _conv(x, kernel, strides, padding, 3)
  return _custom_conv3d(x, kernel, strides, padding)


def _conv(x, kernel, strides, padding, dims):
  """The plain form: one `lax.conv_general_dilated`, 2-D or 3-D."""
  dn = {2: ('NHWC', 'HWIO', 'NHWC'), 3: ('NDHWC', 'DHWIO', 'NDHWC')}[dims]
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=strides, padding=padding,
      dimension_numbers=dn)


@jax.custom_vjp
def _pointwise(x, kernel):
  """A 1×1×1 conv of [N, T, H, W, C] `x`: one matmul over frames and pixels.

  The VJP is written out so that the weight gradient contracts [N·T, H·W]
  in that order. From autodiff's contraction over all of N, T, H, W,
  XLA:CPU's layout assignment was free to order them, and behind a
  temporal shift it chose (H, N, T, W): the gradient then ran BN's backward
  inside a 5-D transpose, ~0.7 s for one 2×8×56²×256 tensor and over a
  third of a TSM-R50 training step (benchmarks/README.md). Folding the
  axes in the forward pass alone did not stop it; autodiff re-derives the
  same contraction.
  """
  return jnp.einsum('nthwc,cd->nthwd', x, kernel)


def _narrower_than_kernel(sizes, kernel_sizes, strides, padding) -> bool:
  """Whether a conv's input or output is narrower than its window somewhere.

  XLA:CPU's YNNPACK declines such a conv (e.g. a 3×3 conv on 2×2 or 1×1
  pixels), and Eigen's conv for it runs at ~2 GFLOP/s: ResNet's layer4 on a
  64² clip took 140 ms for a 3×3 512 → 512 conv that PyTorch runs in 1.4 ms
  (benchmarks/README.md, "Convs narrower than their kernel"). Its gradient
  convolves the output, so the output's size counts too.
  """
  for size, k, stride, pad in zip(sizes, kernel_sizes, strides, padding):
    out = (size + sum(pad) - k) // stride + 1
    if min(size, out) < k:
      return True
  return False


def _im2col_conv(x, kernel, strides, padding):
  """A conv of [B, *S, C] `x` (S: 2 or 3 axes) as one matmul over its windows.

  The same products (the MAC count of conv_general_dilated), summed in
  another order; for the small inputs it is used on, the copy of the input
  per kernel tap is a few hundred KiB. The kernel is reshaped to
  [taps·C, D], so a data-parallel step all-reduces its gradient in that
  shape. An einsum over windows stacked as [B, *S', *k, C] and the kernel as
  it is would keep the parameter's shape, but it ran 2-3× slower forward
  and backward (benchmarks/README.md, "Convs narrower than their kernel").
  """
  *window, _, c_out = kernel.shape
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out = [(size - k) // s + 1
         for size, k, s in zip(x.shape[1:-1], window, strides)]
  taps = [x[(slice(None),) + tuple(
      slice(o, o + s * (n - 1) + 1, s)
      for o, s, n in zip(offset, strides, out))]
          for offset in itertools.product(*map(range, window))]
  # Tap-major (row-major over the window), then input channel: the order
  # of the kernel's rows.
  return jnp.concatenate(taps, axis=-1) @ kernel.reshape(-1, c_out)


def _pointwise_fwd(x, kernel):
  return _pointwise(x, kernel), (x, kernel)


def _pointwise_bwd(residuals, g):
  x, kernel = residuals
  n, t, h, w, c = x.shape
  dx = jnp.einsum('nthwd,cd->nthwc', g, kernel)
  dk = jnp.einsum('fpc,fpd->cd', x.reshape(n * t, h * w, c),
                  g.reshape(n * t, h * w, g.shape[-1]))
  # Inside shard_map (a time-sharded step) the kernel is replicated over
  # axes along which x varies: sum its gradient over them, as autodiff's
  # own transpose does.
  varying = (jax.typeof(dk).manual_axis_type.varying
             - jax.typeof(kernel).manual_axis_type.varying)
  if varying:
    dk = jax.lax.psum(dk, tuple(sorted(varying)))
  return dx, dk.astype(kernel.dtype)


_pointwise.defvjp(_pointwise_fwd, _pointwise_bwd)


def _polyphase_temporal_conv(x, kernel, stride, padding):
  """A kt×1 conv with temporal stride s > 1, as s stride-1 convs.

  x is [N, T, P, C] (height and width folded into P), kernel [kt, 1, C, D].
  Output t reads frame s·t + k - pad for tap k. Split the frames by phase
  r = frame mod s: phase r holds frames r, r + s, ..., and the taps that read
  it sit at consecutive offsets. So the conv is a sum over phases of stride-1
  convs of each phase with its own taps, the same products and sums with
  none wasted.

  Why: XLA:CPU's gradient of a strided conv runs a slow "base-dilated" conv
  (S3D's 7×1×1 stride-2 stem conv spent ~1 s per training step there), and
  the stride-1 convs' gradients are ordinary convs. Against the previous
  hand-written VJP (the stride-1 conv's gradient at the strided outputs, which
  does twice the work), the stem's forward+backward went from 462 to 310 ms
  (benchmarks/README.md).
  """
  kt = kernel.shape[0]
  t = x.shape[1]
  lo, hi = padding
  t_out = (t + lo + hi - kt) // stride + 1
  y = None
  for r in range(stride):
    taps = [k for k in range(kt) if (k - lo - r) % stride == 0]
    phase = x[:, r::stride]
    if not taps or phase.shape[1] == 0:
      continue
    first = (taps[0] - lo - r) // stride   # offset of the first tap
    pad_lo = -first
    pad_hi = t_out - phase.shape[1] - pad_lo + len(taps) - 1
    part = _conv(phase, kernel[taps[0]::stride][:len(taps)], (1, 1),
                 ((max(pad_lo, 0), max(pad_hi, 0)), (0, 0)), 2)
    # A negative pad means the phase has frames no output reads: crop.
    begin = max(-pad_lo, 0)
    part = part[:, begin:begin + t_out]
    y = part if y is None else y + part
  return y


def _custom_conv3d(x, kernel, strides, padding):
  kt, kh, kw, c_in, c_out = kernel.shape
  st, sh, sw = strides
  (pt, ph, pw) = padding
  n, t, h, w, _ = x.shape
  # Narrow in height or width only: time alone narrower than kt is not
  # known to be slow, so such a conv stays a conv.
  narrow = _narrower_than_kernel((h, w), (kh, kw), (sh, sw), (ph, pw))
  no_time = kt == 1 and pt == (0, 0)
  one_by_one = kh == kw == 1 and ph == (0, 0) and pw == (0, 0)
  no_space = one_by_one and sh == sw == 1
  if no_time and st > 1:
    # A 1×k×k kernel with a temporal stride (TF-slim's 2D stem keeps stride 2
    # in time) only reads every st-th frame.
    x = x[:, ::st]
    n, t, h, w, _ = x.shape
  if no_time and one_by_one:
    # A strided 1×1 conv (ResNet's projection shortcut) reads every sh-th
    # row and sw-th column: subsample, then a pointwise conv. As a conv,
    # XLA:CPU's weight gradient transposed the full-size input ([C, H, W, N])
    # and ran 3-7× slower than the matmul (benchmarks/README.md).
    return _pointwise(x[:, :, ::sh, ::sw], kernel[0, 0, 0])
  if no_time:
    frames = x.reshape(n * t, h, w, c_in)
    if narrow:
      y = _im2col_conv(frames, kernel[0], (sh, sw), (ph, pw))
    else:
      y = _conv(frames, kernel[0], (sh, sw), (ph, pw), 2)
    return y.reshape(n, t, *y.shape[1:])
  if no_space:
    folded = x.reshape(n, t, h * w, c_in)
    if st > 1:
      y = _polyphase_temporal_conv(folded, kernel[:, 0], st, pt)
    else:
      y = _conv(folded, kernel[:, 0], (1, 1), (pt, (0, 0)), 2)
    return y.reshape(n, y.shape[1], h, w, c_out)
  if narrow:
    # As pathological on XLA:CPU as a 1×k×k one: 3×3×3, 256 channels, on
    # 4×2×2 took 29 ms against PyTorch's 0.8.
    return _im2col_conv(x, kernel, strides, padding)
  return _conv(x, kernel, strides, padding, 3)
