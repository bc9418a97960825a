"""Spatio-temporal convolution units: 2D (1×k×k), full 3D (k×k×k) and separable.

Every conv keeps its kernel as a 5-D array [kt, kh, kw, c_in, c_out],
whichever kernel set runs it (vidjax/kernels/conv.py: by kernel shape, or as
one XLA 3-D conv), so checkpoints and converters see one parameter layout.
The `kernels` option of a layer ('custom', 'plain' or 'auto') picks the set;
vidjax/kernels/selection.py has the table 'auto' reads.
"""
import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.kernels import conv as conv_kernels
from vidjax.layers.norm import BatchNormReLU
from vidjax.parallel import halo
from vidjax.parallel import rules as rules_lib

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


def conv3d(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
           padding: Sequence[tuple[int, int]],
           kernels: str = 'custom') -> jax.Array:
  """A 3-D convolution of NTHWC `x` (vidjax.kernels.conv.conv3d).

  On a mesh with a time axis, a conv with a temporal window runs
  time-sharded with halo frames (vidjax/parallel/halo.py).
  """
  strides = tuple(strides)
  padding = [tuple(p) for p in padding]
  kt, st = kernel.shape[0], strides[0]

  # Even a 1×k×k conv runs per time shard: folding N·T into the batch of a
  # 2-D conv mixes the data and time splits, and the partitioner would
  # gather whole clips to do it (seen in the HLO; docs/scale.md).
  def op(x, kernel, padding):
    return conv_kernels.conv3d(x, kernel, strides, [padding, *pads_hw],
                               kernels)

  pads_hw = padding[1:]
  return halo.temporal_window(op, x, kernel, window=kt, stride=st,
                              padding=padding[0], pad_value=0.0)


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
  kernels: str = 'custom'

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
    y = conv3d(x, kernel, self.strides, pads, self.kernels)
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
                    kernels: str = 'custom') -> BatchNormReLU:
  """BN over NTHWC with a reference's epsilon, momentum and scale, then ReLU.

  With kernels 'custom', its hand-written gradient writes less memory than
  autodiff through BN and ReLU (vidjax/kernels/norm.py). `groups`: batch
  statistics per group of clips (synchronised BN over k devices).
  """
  return BatchNormReLU(
      use_running_average=not train, momentum=numerics.bn_momentum,
      epsilon=numerics.bn_epsilon, use_scale=numerics.bn_scale, dtype=dtype,
      param_dtype=param_dtype, groups=groups,
      kernels=kernels, name=name)


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
  # The kernel set of its convs and BN ('custom', 'plain', 'auto').
  kernels: str = 'custom'

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
                  param_dtype=self.param_dtype, kernels=self.kernels)
    norm_relu = lambda name: batch_norm_relu(  # noqa: E731
        self.numerics, train, name, self.dtype, self.param_dtype,
        self.bn_groups, self.kernels)
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
