"""TSN and TSM on ResNet-18/34/50/101 (Lin et al., "TSM: Temporal Shift Module
for Efficient Video Understanding", ICCV 2019; Wang et al.'s TSN).

The backbone is torchvision's ResNet v1.5 (the stride of a bottleneck stage
sits on its 3×3 conv), run on every frame of an NTHWC clip: each conv is a
1×k×k conv, so frames never mix except where a temporal shift moves them.

  * TSN (`shift='none'`): the per-frame 2D network; logits averaged over the
    T segments (TSN's 'avg' consensus on the logits).
  * TSM offline (`shift='bidirectional'`): before conv1 of a block, 1/8 of
    the channels come from the next frame and 1/8 from the previous one
    (`shift_div`), in the residual branch only (`placement='residual'`, the
    official 'blockres') or for the whole block ('in_place', 'block').
    In 'blockres', ResNet-101 shifts every second block of every stage: the
    official `make_temporal_shift` sets n_round = 2 when layer3 has 23
    blocks and applies it in layer1–4 alike; 'block' wraps every block.
  * TSM online (`shift='right'`): channels come from the past only, so the
    model runs on a stream; `__call__(frame, state=...)` takes one frame and
    the cached channels of every shifted block and returns that frame's
    logits and the new cache (streaming below).
  * `temporal_pool=True`: the official TemporalPool, a max-pool over time
    (window 3, stride 2, padding 1) before layer2, halving T.

Parameter names follow the block hierarchy: `conv1`, `bn1`,
`layer1/block0/conv1`, `layer1/block0/bn1`, ..., `layer1/block0/downsample/
{conv,bn}`, `fc`. Convolution kernels are 5-D [1, kh, kw, c_in, c_out] as
everywhere in vidjax (checkpoint converters see one layout), and every
activation carries the logical axes (batch, time, height, width, channels),
so on a mesh with a time axis a clip stays split along T through the whole
network; the shifts then exchange only their boundary frames' shifted
channels with the neighbouring shard (vidjax/layers/shift.py).

Streaming. `state` maps a shifted block's path ('layer1/block0') to its
buffer [N, 1, H, W, C // shift_div]: the first channels of the previous
frame's block input. An empty dict is the reset state (zeros); under
`jax.jit` start from `init_stream_state` instead, whose pytree is the one
every step returns, so the step compiles once. Fed frame by frame from a
reset, the logits equal the offline causal model's per-frame logits
(`features['frame_logits']`; tests/models/test_resnet.py,
tests/test_stream.py).
"""
from collections.abc import Mapping
import dataclasses
import functools
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.errors import VidjaxError
from vidjax import kernels as kernels_lib
from vidjax.layers import conv as conv_lib
from vidjax.layers import pool as pool_lib
from vidjax.layers import shift as shift_lib
from vidjax.layers.norm import BatchNormReLU
from vidjax.models.spec import ModelSpec
from vidjax.parallel import rules as rules_lib

# Depth → (block kind, blocks per stage), as torchvision.
DEPTHS = {
    18: ('basic', (2, 2, 2, 2)),
    34: ('basic', (3, 4, 6, 3)),
    50: ('bottleneck', (3, 4, 6, 3)),
    101: ('bottleneck', (3, 4, 23, 3)),
}
STAGE_MULTIPLIERS = (1, 2, 4, 8)  # Stage widths: width × these.
SHIFTS = ('none', 'bidirectional', 'right')
REMAT = ('none', 'block')
# torchvision's BatchNorm2d: eps 1e-5, momentum 0.1 (Flax's 0.9).
BN_EPSILON = 1e-5
BN_MOMENTUM = 0.9
# TSN's new_fc: N(0, 0.001) weights, zero bias.
fc_kernel_init = nn.initializers.normal(0.001)

_WARNED_SEGMENTS = set()


@dataclasses.dataclass(frozen=True)
class _Layers:
  """Conv and BN of torchvision's numerics, shared by the stem and blocks."""
  dtype: Any = None
  bn_groups: int = 1
  bn_momentum: float = BN_MOMENTUM
  kernels: str = 'custom'

  def conv(self, features: int, kernel: int, stride: int, name: str):
    # Symmetric (k - 1) // 2 padding: torchvision's padding=3 / 1 / 0.
    return conv_lib.Conv3D(
        features, (1, kernel, kernel), (1, stride, stride),
        padding='SYMMETRIC', dtype=self.dtype, kernels=self.kernels,
        name=name)

  def bn(self, train: bool, name: str, relu: bool = True):
    return BatchNormReLU(
        use_running_average=not train, momentum=self.bn_momentum,
        epsilon=BN_EPSILON, dtype=self.dtype, groups=self.bn_groups,
        kernels=self.kernels, relu=relu, name=name)


class Projection(nn.Module, kw_only=True):
  """torchvision's `downsample`: a strided 1×1 conv and BN (no ReLU)."""
  features: int
  stride: int
  layers: _Layers

  @nn.compact
  def __call__(self, x, train: bool):
    x = self.layers.conv(self.features, 1, self.stride, 'conv')(x)
    return self.layers.bn(train, 'bn', relu=False)(x)


class _Block(shift_lib.ShiftedResidual, kw_only=True):
  """A torchvision residual block with a TSM shift (ShiftedResidual)."""
  features: int
  stride: int = 1
  projection: bool = False
  dtype: Any = None
  bn_groups: int = 1
  bn_momentum: float = BN_MOMENTUM
  kernels: str = 'custom'

  expansion = 1

  def _layers(self) -> _Layers:
    return _Layers(self.dtype, self.bn_groups, self.bn_momentum,
                   self.kernels)

  def shortcut(self, x, train):
    if not self.projection:
      return x
    return Projection(features=self.features * self.expansion,
                      stride=self.stride, layers=self._layers(),
                      name='downsample')(x, train)

  def activation(self, y):
    return rules_lib.constrain(nn.relu(y), rules_lib.VIDEO)


class BasicBlock(_Block, kw_only=True):
  """ResNet-18/34: 3×3 (strided) → BN → ReLU → 3×3 → BN."""
  expansion = 1

  def branch(self, x, train):
    layers = self._layers()
    x = layers.conv(self.features, 3, self.stride, 'conv1')(x)
    x = layers.bn(train, 'bn1')(x)
    x = layers.conv(self.features, 3, 1, 'conv2')(x)
    return layers.bn(train, 'bn2', relu=False)(x)


class Bottleneck(_Block, kw_only=True):
  """ResNet-50/101 v1.5: 1×1 → 3×3 (strided) → 1×1 (×4), BN after each."""
  expansion = 4

  def branch(self, x, train):
    layers = self._layers()
    x = layers.conv(self.features, 1, 1, 'conv1')(x)
    x = layers.bn(train, 'bn1')(x)
    x = layers.conv(self.features, 3, self.stride, 'conv2')(x)
    x = layers.bn(train, 'bn2')(x)
    x = layers.conv(self.features * 4, 1, 1, 'conv3')(x)
    return layers.bn(train, 'bn3', relu=False)(x)


BLOCKS = {'basic': BasicBlock, 'bottleneck': Bottleneck}


def shifted_blocks(depth: int,
                   placement: str = 'residual') -> list[tuple[int, int]]:
  """(stage, block) indices the official TSM shifts in `placement`."""
  _, counts = DEPTHS[depth]
  # The official n_round, for 'blockres' only: every second block once
  # layer3 has >= 23 blocks. 'block' (in_place) wraps every block.
  every = 2 if placement == 'residual' and counts[2] >= 23 else 1
  return [(s, b) for s, n in enumerate(counts) for b in range(n)
          if b % every == 0]


class TSM(nn.Module):
  """TSN / TSM / online TSM on a torchvision ResNet, NTHWC clips in.

  Attributes:
    num_classes: logits size.
    depth: 18, 34, 50 or 101.
    width: the stem's and layer1's width (torchvision: 64); stages double
      it. Smaller widths are for tests.
    shift: 'none' (TSN), 'bidirectional' (TSM offline) or 'right' (online,
      past → present).
    shift_div: 1/fraction of the channels moved per direction (8: 1/8 each
      way); C // shift_div channels move, so a value above every block's
      width moves none.
    placement: 'residual' (official 'blockres') or 'in_place' ('block').
    temporal_pool: max-pool over time before layer2 (halves T).
    num_segments: the segment count the weights are meant for. The network
      runs on any T; another count logs one warning.
    dropout_rate: before the classifier (0.5 in the official scripts).
    bn_momentum: Flax's momentum of the running statistics (torchvision:
      0.9).
    dtype: compute dtype (bf16 with float32 parameters).
    bn_groups: BN statistics per this many groups of the batch.
    kernels: 'custom', 'plain' or 'auto' (vidjax/kernels/selection.py).
    remat: 'none' or 'block' (each residual block recomputed from its input
      in the backward pass).
  """
  num_classes: int
  depth: int = 50
  width: int = 64
  shift: str = 'bidirectional'
  shift_div: int = 8
  placement: str = 'residual'
  temporal_pool: bool = False
  num_segments: int = 8
  dropout_rate: float = 0.5
  bn_momentum: float = BN_MOMENTUM
  dtype: Any = None
  bn_groups: int = 1
  kernels: str = 'auto'
  remat: str = 'none'

  def _check(self):
    if self.depth not in DEPTHS:
      raise VidjaxError(f'ResNet depth must be one of {sorted(DEPTHS)}, got '
                        f'{self.depth!r}')
    if self.shift not in SHIFTS:
      raise VidjaxError(f'shift must be one of {SHIFTS}, got {self.shift!r}')
    if self.remat not in REMAT:
      raise VidjaxError(f'unknown remat {self.remat!r}; known: '
                        f'{", ".join(REMAT)}')
    if self.placement not in shift_lib.PLACEMENTS:
      raise VidjaxError(f'placement must be one of {shift_lib.PLACEMENTS}, '
                        f'got {self.placement!r}')
    # Checked here, where a config reaches it; the shift layer itself
    # raises ValueError for code that calls it wrongly.
    min_div = shift_lib.min_fold_div(self.shift)
    if self.shift != 'none' and (not isinstance(self.shift_div, int)
                                 or self.shift_div < min_div):
      raise VidjaxError(f'shift_div must be an integer >= {min_div} for a '
                        f'{self.shift} shift, got {self.shift_div!r}')

  def _warn_segments(self, frames: int):
    key = (self.num_segments, frames)
    if frames != self.num_segments and key not in _WARNED_SEGMENTS:
      _WARNED_SEGMENTS.add(key)
      logging.warning(
          'vidjax: TSM weights for %d segments run on clips of %d frames; '
          'the shift still works, but accuracy may differ from the paper\'s',
          self.num_segments, frames)

  @nn.compact
  def __call__(self, video: jax.Array, train: bool = False,
               return_features: bool = False,
               state: Mapping[str, jax.Array] | None = None):
    """Logits [N, classes] of clips [N, T, H, W, 3].

    With `state` (streaming), `video` is one frame [N, H, W, 3] and the call
    returns (logits [N, classes], new_state); see the module doc.
    """
    self._check()
    streaming = state is not None
    if streaming:
      if self.shift == 'bidirectional':
        raise VidjaxError('a bidirectional TSM reads the next frame and cannot '
                          "stream; use the online model (shift='right')")
      if self.temporal_pool:
        raise VidjaxError('temporal pooling needs whole clips and cannot '
                          'stream')
      if video.ndim != 4:
        raise VidjaxError(f'a stream step takes one frame [N, H, W, 3], got '
                          f'shape {video.shape}')
      if train or return_features:
        raise VidjaxError('a stream step is inference only: no train=True or '
                          'return_features=True with a state')
      video = video[:, None]
    elif video.ndim != 5:
      raise VidjaxError(f'TSM takes clips [N, T, H, W, 3], got shape '
                        f'{video.shape}')
    else:
      self._warn_segments(video.shape[1])
    kernels = kernels_lib.resolve(self.kernels)
    layers = _Layers(self.dtype, self.bn_groups, self.bn_momentum, kernels)
    kind, counts = DEPTHS[self.depth]
    block_cls = BLOCKS[kind]
    if self.remat == 'block':
      block_cls = nn.remat(block_cls, static_argnums=(2,))
    shifted = (set(shifted_blocks(self.depth, self.placement))
               if self.shift != 'none' else ())
    if streaming and state:
      # Only {} is the implicit reset: a partial state would silently reset
      # the blocks it lacks on every frame.
      want = {f'layer{s + 1}/block{b}' for s, b in shifted}
      if set(state) != want:
        raise VidjaxError(
            f'stream state does not fit this model: missing '
            f'{sorted(want - set(state)) or "none"}, unexpected '
            f'{sorted(set(state) - want) or "none"}')

    features = {}
    x = video.astype(self.dtype) if self.dtype else video
    x = rules_lib.constrain(x, rules_lib.VIDEO)
    x = layers.conv(self.width, 7, 2, 'conv1')(x)
    x = rules_lib.constrain(layers.bn(train, 'bn1')(x), rules_lib.VIDEO)
    x = pool_lib.max_pool(x, (1, 3, 3), (1, 2, 2), [(0, 0), (1, 1), (1, 1)],
                          kernels)
    x = rules_lib.constrain(x, rules_lib.VIDEO)

    new_state = {}
    in_features = self.width
    for s, count in enumerate(counts):
      width = self.width * STAGE_MULTIPLIERS[s]
      if s == 1 and self.temporal_pool:
        x = pool_lib.max_pool(x, (3, 1, 1), (2, 1, 1),
                              [(1, 1), (0, 0), (0, 0)], kernels)
        x = rules_lib.constrain(x, rules_lib.VIDEO)
      stage = f'layer{s + 1}'
      for b in range(count):
        stride = 2 if s > 0 and b == 0 else 1
        is_shifted = (s, b) in shifted
        block = block_cls(
            features=width, stride=stride,
            projection=b == 0 and (stride != 1 or
                                   in_features != width * block_cls.expansion),
            placement=self.placement,
            # A fold of C // div = 0 channels: the block does not shift.
            fold_div=self.shift_div if is_shifted else 1 << 30,
            mode='right' if self.shift == 'none' else self.shift,
            dtype=self.dtype, bn_groups=self.bn_groups,
            bn_momentum=self.bn_momentum, kernels=kernels,
            name=f'{stage}/block{b}')
        in_features = width * block_cls.expansion
        key = f'{stage}/block{b}'
        if streaming and is_shifted:
          buffer = state.get(key)
          if buffer is None:  # The reset state, {}.
            buffer = shift_lib.init_shift_buffer(
                x.shape, fold_div=self.shift_div, dtype=x.dtype)
          x, new_state[key] = block(x, train, buffer)
        else:
          x = block(x, train)
      features[stage] = x

    # Head: global average pool per frame → dropout → fc → mean over T.
    x = jnp.mean(x, axis=(2, 3))
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    frame_logits = nn.Dense(
        self.num_classes,
        kernel_init=nn.with_logical_partitioning(fc_kernel_init,
                                                 ('conv_in', 'classes')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                               ('classes',)),
        dtype=self.dtype, name='fc')(x).astype(jnp.float32)
    logits = jnp.mean(frame_logits, axis=1)
    if streaming:
      return logits, new_state
    features['frame_logits'] = frame_logits
    features['logits'] = logits
    return (logits, features) if return_features else logits


def init_stream_state(model: TSM, variables, frame_shape) -> dict:
  """The reset state of `model.apply(variables, frame, state=...)`: zeros.

  Args:
    model: an online TSM (shift 'right').
    variables: its variables.
    frame_shape: (N, H, W, 3) of the frames it will be fed.
  """
  frame = jax.ShapeDtypeStruct(tuple(frame_shape), jnp.float32)
  _, state = jax.eval_shape(
      functools.partial(model.apply, state={}), variables, frame)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)


# -----------------------------------------------------------------------------
# The models of the family, by name (collected by vidjax/models/registry.py).
# -----------------------------------------------------------------------------

# What a config may set (`config.model.*`). `bn_groups` is not among them:
# the trainer sets it from `config.bn_sync_devices`.
OPTIONS = ('depth', 'width', 'shift', 'shift_div', 'placement',
           'temporal_pool', 'num_segments', 'dropout_rate', 'bn_momentum',
           'dtype', 'kernels', 'remat')


def _spec(name: str, depth: int, shift: str) -> ModelSpec:
  return ModelSpec(name, TSM, dict(depth=depth, shift=shift),
                   family='resnet', head='fc', normalization='imagenet',
                   option_names=OPTIONS)


SPECS = (
    # TSN: the per-frame 2D network.
    _spec('tsn_r18', 18, 'none'),
    _spec('tsn_r34', 34, 'none'),
    _spec('tsn_r50', 50, 'none'),
    _spec('tsn_r101', 101, 'none'),
    # TSM offline: channels from the next and the previous frame.
    _spec('tsm_r18', 18, 'bidirectional'),
    _spec('tsm_r34', 34, 'bidirectional'),
    _spec('tsm_r50', 50, 'bidirectional'),
    _spec('tsm_r101', 101, 'bidirectional'),
    # TSM online: channels from the past only, so it runs on a stream.
    _spec('tsm_online_r18', 18, 'right'),
    _spec('tsm_online_r34', 34, 'right'),
    _spec('tsm_online_r50', 50, 'right'),
    _spec('tsm_online_r101', 101, 'right'),
)
