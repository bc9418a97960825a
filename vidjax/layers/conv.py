"""Spatio-temporal convolution units: 2D (1×k×k), full 3D (k×k×k) and separable.

Every conv keeps its kernel as a 5-D array [kt, kh, kw, c_in, c_out], whatever
lowering runs it, so checkpoints and converters see one parameter layout. The
lowering is chosen per kernel shape because XLA:CPU runs the same maths at very
different speeds (see benchmarks/): a 1×k×k conv folds time into the batch and
runs as a 2-D conv, a kt×1×1 conv folds height and width into one axis and runs
as a 2-D conv with a (kt, 1) window, a 1×1×1 conv is a matmul, and only genuine
k×k×k kernels run as 3-D convs. A conv whose input or output is narrower than
its window in height or width (ResNet's layer4 on small clips, I3D's last
blocks) runs as one matmul over its windows.
"""
import dataclasses
import itertools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.layers.norm import BatchNormReLU
from vidjax.parallel import halo
from vidjax.parallel import rules as rules_lib

# How convs, pools and BN+ReLU are lowered. 'cpu': the forms measured
# fastest on XLA:CPU (folded 2-D convs, polyphase strided temporal convs,
# separable max-pools with int8 winners, BN+ReLU with a hand-written
# gradient; benchmarks/README.md). 'xla': the plain XLA ops (3-D convs,
# reduce_window, autodiff BN). 'auto' picks by the platform, from
# DEFAULT_LOWERING. Parameters and values are the same either way.
LOWERINGS = ('auto', 'cpu', 'xla')
# Per platform, by what was measured. On TPU, from the AOT report of
# S3D-G's train step (docs/scale.md: v5e 4x4, bf16, 4 clips per chip), the
# CPU-tuned forms need less HBM (11.40 against 14.05 GiB), fewer flops
# (1.45 against 1.62 TFLOP) and fewer bytes (85.9 against 96.5 GB) than the
# plain ops, and the step is memory-bound by the roofline: so 'cpu' there
# too. An estimate, not a TPU timing; `--config.model.lowering=xla` is one
# flag away. GPUs were not measured: the plain ops.
DEFAULT_LOWERING = {'cpu': 'cpu', 'tpu': 'cpu', 'gpu': 'xla'}


def default_lowering(platform: str) -> str:
  """What lowering 'auto' means on `platform` ('cpu', 'tpu', 'gpu', ...)."""
  return DEFAULT_LOWERING.get(platform, 'xla')


def resolve_lowering(lowering: str) -> str:
  if lowering not in LOWERINGS:
    raise ValueError(f'unknown lowering {lowering!r}; known: '
                     f'{", ".join(LOWERINGS)}')
  if lowering == 'auto':
    return default_lowering(jax.default_backend())
  return lowering

Dtype = Any
Padding = str | Sequence[tuple[int, int]]

# TF-slim initialises every Inception conv with a truncated normal of stddev
# 0.01. Behind BN the forward pass does not care, but the effective learning
# rate of a scale-invariant weight grows as 1/|w|², and at 0.01 that made
# SGD from scratch stall for hundreds of steps. Convs followed by BN therefore
# start with He (fan-out) init, as torchvision's video models do; layers not
# followed by BN (gating, classifier) keep TF-slim's small init.
default_kernel_init = nn.initializers.truncated_normal(0.01)
bn_conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out',
                                                       'normal')


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TensorFlow's SAME padding: output ceil(size/stride), extra pad at the end."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def symmetric_padding(kernel: int) -> tuple[int, int]:
  """PyTorch-style padding=(k-1)//2 on both sides (torchvision's S3D)."""
  return (kernel - 1) // 2, (kernel - 1) // 2


def explicit_padding(padding: Padding, sizes: Sequence[int],
                     kernel: Sequence[int],
                     strides: Sequence[int]) -> list[tuple[int, int]]:
  """Resolves 'SAME' / 'SYMMETRIC' / 'VALID' or explicit pairs per axis."""
  if not isinstance(padding, str):
    return [tuple(p) for p in padding]
  if padding == 'SAME':
    return [tf_same_padding(n, k, s) for n, k, s in zip(sizes, kernel, strides)]
  if padding == 'SYMMETRIC':
    return [symmetric_padding(k) for k in kernel]
  if padding == 'VALID':
    return [(0, 0)] * len(kernel)
  raise ValueError(f'unknown padding {padding!r}')


def temporal_identity_init(key, shape, dtype=jnp.float32):
  """Identity on the centre tap of a kt×1×1 conv (TF-slim's center_initializer).

  A separable unit then starts as its spatial half alone, which the S3D
  authors found critical for training separable models from scratch.
  """
  del key
  kt, kh, kw, c_in, c_out = shape
  if kh != 1 or kw != 1 or c_in != c_out or kt % 2 == 0:
    raise ValueError(f'identity init needs an odd kt×1×1 C→C kernel: {shape}')
  eye = jnp.eye(c_in, dtype=dtype)[None, None, None]
  return jnp.zeros(shape, dtype).at[kt // 2].set(eye[0])


def _conv(x, kernel, strides, padding, dims):
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


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
           padding: Sequence[tuple[int, int]],
           lowering: str = 'cpu') -> jax.Array:
  """A 3-D convolution of NTHWC `x`.

  Lowered by kernel shape with `lowering='cpu'` (module doc), as one XLA
  3-D conv with 'xla'. On a mesh with a time axis, a conv with a temporal
  window runs time-sharded with halo frames (vidjax/parallel/halo.py).
  """
  strides = tuple(strides)
  padding = [tuple(p) for p in padding]
  kt, st = kernel.shape[0], strides[0]

  # Even a 1×k×k conv runs per time shard: folding N·T into the batch of a
  # 2-D conv mixes the data and time splits, and the partitioner would
  # gather whole clips to do it (seen in the HLO; docs/scale.md).
  def op(x, kernel, padding):
    return _local_conv3d(x, kernel, strides, [padding, *pads_hw], lowering)

  pads_hw = padding[1:]
  return halo.temporal_window(op, x, kernel, window=kt, stride=st,
                              padding=padding[0], pad_value=0.0)


def _local_conv3d(x, kernel, strides, padding, lowering):
  if lowering == 'xla':
    return _conv(x, kernel, strides, padding, 3)
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


class Conv3D(nn.Module):
  """A conv over NTHWC video with a [kt, kh, kw, c_in, c_out] kernel."""
  features: int
  kernel_size: tuple[int, int, int]
  strides: tuple[int, int, int] = (1, 1, 1)
  padding: Padding = 'SAME'
  use_bias: bool = False
  kernel_init: Any = bn_conv_kernel_init
  bias_init: Any = nn.initializers.zeros
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  lowering: str = 'cpu'

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (*self.kernel_size, x.shape[-1], self.features)
    kernel = self.param(
        'kernel', nn.with_logical_partitioning(self.kernel_init,
                                               rules_lib.CONV_KERNEL),
        shape, self.param_dtype)
    bias = (self.param('bias', nn.with_logical_partitioning(
        self.bias_init, ('conv_out',)), (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias,
                                              dtype=self.dtype)
    pads = explicit_padding(self.padding, x.shape[1:4], self.kernel_size,
                            self.strides)
    y = conv3d(x, kernel, self.strides, pads, resolve_lowering(self.lowering))
    return y if bias is None else y + bias


@dataclasses.dataclass(frozen=True)
class ConvNumerics:
  """How a reference implementation pads, normalises and biases its convs.

  The defaults are TF-slim's (the S3D-G paper's code); `TORCHVISION` is
  torchvision's S3D. The two agree on output sizes but not on values, so
  checkpoint parity needs the reference's own numerics.
  """
  padding: str = 'SAME'              # TF SAME pads asymmetrically.
  # Padding of the max-pools; None: the same as the convs' `padding`.
  pool_padding: str | None = None
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.999         # Flax's momentum is TF's decay.
  bn_scale: bool = False             # slim.batch_norm has no gamma.
  # The temporal half of a separable conv: TF-slim gives it a bias and ReLU
  # but no BN, and starts it at identity; torchvision gives it BN + ReLU.
  temporal_bn: bool = False
  temporal_identity_init: bool = True


TF_SLIM = ConvNumerics()
TORCHVISION = ConvNumerics(padding='SYMMETRIC', bn_scale=True,
                           temporal_bn=True, temporal_identity_init=False)
# ImageNet GoogLeNet (torchvision's `googlenet`) inflated into a video model
# (vidjax.convert.inflate). An inflated model must compute the 2D network on
# a clip of repeated frames, so it keeps googlenet's numerics: symmetric conv
# padding (padding=3 for 7×7, 1 for 3×3), BN with gamma and eps 1e-3, and its
# ceil-mode max-pools without padding, which equal TF SAME pooling on even
# sizes (SAME pads the one extra row at the end, where ceil mode reads past
# the edge). Separable temporal halves keep TF-slim's bias + ReLU and
# identity init: with bias 0, the centre tap passes its ReLU'd, hence
# non-negative, input through and the final ReLU leaves it unchanged, so the
# separable unit starts as googlenet's 2D unit.
GOOGLENET = ConvNumerics(padding='SYMMETRIC', pool_padding='SAME',
                         bn_scale=True, temporal_bn=False,
                         temporal_identity_init=True)

# By name, so that a config can pick a reference layout from the command
# line: --config.model.numerics=torchvision.
NUMERICS = {'tf_slim': TF_SLIM, 'torchvision': TORCHVISION,
            'googlenet': GOOGLENET}


def resolve_numerics(numerics: 'ConvNumerics | str') -> ConvNumerics:
  """A ConvNumerics, or the preset called `numerics` (see NUMERICS)."""
  if isinstance(numerics, ConvNumerics):
    return numerics
  if numerics not in NUMERICS:
    raise ValueError(f'unknown numerics {numerics!r}; known: '
                     f'{", ".join(sorted(NUMERICS))}')
  return NUMERICS[numerics]


CONV_KINDS = ('2d', '3d', 'sep')


def batch_norm_relu(numerics: ConvNumerics, train: bool, name: str,
                    dtype: Dtype | None = None,
                    param_dtype: Dtype = jnp.float32, groups: int = 1,
                    lowering: str = 'cpu') -> BatchNormReLU:
  """BN over NTHWC with a reference's epsilon, momentum and scale, then ReLU.

  With lowering 'cpu', its hand-written gradient writes less memory than
  autodiff through BN and ReLU (vidjax/layers/norm.py). `groups`: batch
  statistics per group of clips (synchronised BN over k devices).
  """
  return BatchNormReLU(
      use_running_average=not train, momentum=numerics.bn_momentum,
      epsilon=numerics.bn_epsilon, use_scale=numerics.bn_scale, dtype=dtype,
      param_dtype=param_dtype, groups=groups,
      custom_gradient=resolve_lowering(lowering) == 'cpu', name=name)


class STConv(nn.Module):
  """Conv → BN → ReLU as 2D (1×k×k), full 3D (kt×k×k) or separable.

  `kind='sep'` is S3D's factorisation: a 1×k×k spatial conv with stride
  (1, s, s), then a kt×1×1 temporal conv with stride (st, 1, 1). A separable
  unit with kt=1 is a plain 2D unit, as in TF-slim. Parameters:
  `conv/kernel`, `bn/…` and, when separable, `temporal/kernel` (+`bias` or
  `temporal_bn/…` by `numerics`).
  """
  features: int
  kernel_size: int
  temporal_kernel_size: int = 1
  kind: str = '2d'
  stride: int = 1
  # None: same as `stride` for '3d'/'sep', 1 for '2d'.
  temporal_stride: int | None = None
  numerics: ConvNumerics = TF_SLIM
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  # BN statistics per this many equal groups of the batch (norm.py).
  bn_groups: int = 1
  lowering: str = 'cpu'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return rules_lib.constrain(self.unit(x, train), rules_lib.VIDEO)

  def unit(self, x: jax.Array, train: bool) -> jax.Array:
    if self.kind not in CONV_KINDS:
      raise ValueError(f'kind must be one of {CONV_KINDS}, got {self.kind!r}')
    k, kt = self.kernel_size, self.temporal_kernel_size
    s = self.stride
    st = s if self.temporal_stride is None else self.temporal_stride
    if self.kind == '2d':
      # A 2D unit strides in time only when asked explicitly.
      kt = 1
      st = 1 if self.temporal_stride is None else self.temporal_stride
    common = dict(padding=self.numerics.padding, dtype=self.dtype,
                  param_dtype=self.param_dtype, lowering=self.lowering)
    norm_relu = lambda name: batch_norm_relu(  # noqa: E731
        self.numerics, train, name, self.dtype, self.param_dtype,
        self.bn_groups, self.lowering)
    if self.kind == 'sep' and kt > 1:
      x = Conv3D(self.features, (1, k, k), (1, s, s), name='conv', **common)(x)
      x = norm_relu('bn')(x)
      temporal_bn = self.numerics.temporal_bn
      init = (temporal_identity_init if self.numerics.temporal_identity_init
              else bn_conv_kernel_init)
      x = Conv3D(self.features, (kt, 1, 1), (st, 1, 1),
                 use_bias=not temporal_bn, kernel_init=init, name='temporal',
                 **common)(x)
      return norm_relu('temporal_bn')(x) if temporal_bn else nn.relu(x)
    x = Conv3D(self.features, (kt, k, k), (st, s, s), name='conv',
               **common)(x)
    return norm_relu('bn')(x)
