"""The Inception-v1 video backbone of Xie et al. and every network of its study.

One module builds I2D, I3D, bottom-/top-heavy variants, S3D, Fast-S3D and
S3D-G: which blocks are 2D, full 3D or separable, and which are gated, comes
from `schedule`, one entry per block of `SCHEDULED_BLOCKS`:

  '2d'      1×3×3 convs              '3d'       3×3×3 convs
  'sep'     1×3×3 then 3×1×1         any + '+gate'  S3D-G gating after it

Endpoint and branch names follow TF-slim's `s3dg.py` (Conv2d_1a_7x7,
Mixed_4b/Branch_1/Conv2d_0b_3x3, ...), so checkpoints map by name and the
intermediate features carry the names papers use.
"""
import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax import kernels as kernels_lib
from vidjax.layers import conv as conv_lib
from vidjax.layers import pool as pool_lib
from vidjax.layers.gating import SelfGating
from vidjax.models.spec import ModelSpec
from vidjax.parallel import rules as rules_lib

REMAT = ('none', 'block', 'full')

# Branch widths (b0, b1a, b1b, b2a, b2b, b3) per Inception block.
INCEPTION_WIDTHS = {
    'Mixed_3b': (64, 96, 128, 16, 32, 32),
    'Mixed_3c': (128, 128, 192, 32, 96, 64),
    'Mixed_4b': (192, 96, 208, 16, 48, 64),
    'Mixed_4c': (160, 112, 224, 24, 64, 64),
    'Mixed_4d': (128, 128, 256, 24, 64, 64),
    'Mixed_4e': (112, 144, 288, 32, 64, 64),
    'Mixed_4f': (256, 160, 320, 32, 128, 128),
    'Mixed_5b': (256, 160, 320, 32, 128, 128),
    'Mixed_5c': (384, 192, 384, 48, 128, 128),
}
# Blocks whose 3×3 convs the schedule sets; Conv2d_1a_7x7 is set by `stem`.
SCHEDULED_BLOCKS = ('Conv2d_2c_3x3',) + tuple(INCEPTION_WIDTHS)
# Max-pools between stages: (name, window, strides), placed before the block.
POOLS_BEFORE = {
    'Mixed_3b': ('MaxPool_3a_3x3', (1, 3, 3), (1, 2, 2)),
    'Mixed_4b': ('MaxPool_4a_3x3', (3, 3, 3), (2, 2, 2)),
    'Mixed_5b': ('MaxPool_5a_2x2', (2, 2, 2), (2, 2, 2)),
}


def parse_schedule_entry(entry: str) -> tuple[str, bool]:
  """'sep+gate' → ('sep', True); validates the conv kind."""
  kind, _, gate = entry.partition('+')
  if kind not in conv_lib.CONV_KINDS or gate not in ('', 'gate'):
    raise ValueError(
        f'bad schedule entry {entry!r}: want one of {conv_lib.CONV_KINDS}, '
        "optionally followed by '+gate'")
  return kind, gate == 'gate'


def max_pool(x, window, strides, padding, kernels='custom'):
  pads = conv_lib.explicit_padding(padding, x.shape[1:4], window, strides)
  y = pool_lib.max_pool(x, window, strides, pads, kernels)
  return rules_lib.constrain(y, rules_lib.VIDEO)


class InceptionBlock(nn.Module):
  """Four branches (1×1; 1×1→3×3; 1×1→3×3; pool→1×1), concatenated."""
  widths: tuple[int, int, int, int, int, int]
  kind: str
  gated: bool
  gating_bias: bool
  numerics: conv_lib.ConvNumerics
  dtype: Any = None
  bn_groups: int = 1
  kernels: str = 'custom'

  @nn.compact
  def __call__(self, x, train: bool):
    b0, b1a, b1b, b2a, b2b, b3 = self.widths
    # Only the 3×3 convs follow the schedule; 1×1×1 convs are pointwise in
    # every model of the family.
    unit = lambda f, k, name: conv_lib.STConv(  # noqa: E731
        f, k, temporal_kernel_size=3, kind=self.kind if k > 1 else '2d',
        numerics=self.numerics, dtype=self.dtype, bn_groups=self.bn_groups,
        kernels=self.kernels, name=name)
    gate = lambda y, name: (  # noqa: E731
        SelfGating(self.gating_bias, dtype=self.dtype, name=name)(y)
        if self.gated else y)

    y0 = unit(b0, 1, 'Branch_0/Conv2d_0a_1x1')(x, train)
    y0 = gate(y0, 'Branch_0/gating')
    y1 = unit(b1a, 1, 'Branch_1/Conv2d_0a_1x1')(x, train)
    y1 = unit(b1b, 3, 'Branch_1/Conv2d_0b_3x3')(y1, train)
    y1 = gate(y1, 'Branch_1/gating')
    y2 = unit(b2a, 1, 'Branch_2/Conv2d_0a_1x1')(x, train)
    y2 = unit(b2b, 3, 'Branch_2/Conv2d_0b_3x3')(y2, train)
    y2 = gate(y2, 'Branch_2/gating')
    y3 = max_pool(x, (3, 3, 3), (1, 1, 1),
                  self.numerics.pool_padding or self.numerics.padding,
                  self.kernels)
    y3 = unit(b3, 1, 'Branch_3/Conv2d_0b_1x1')(y3, train)
    y3 = gate(y3, 'Branch_3/gating')
    return rules_lib.constrain(jnp.concatenate([y0, y1, y2, y3], axis=-1),
                               rules_lib.VIDEO)


class InceptionVideoNet(nn.Module):
  """Inception-v1 video classifier (I2D … S3D-G) on NTHWC input.

  Attributes:
    num_classes: logits size.
    schedule: one entry per `SCHEDULED_BLOCKS` (module doc).
    stem: kind of Conv2d_1a_7x7: '2d', '3d' (TF-slim) or 'sep' (torchvision).
    stem_temporal_kernel: its temporal extent (TF-slim S3D-G: 3, I3D: 7).
    depth_multiplier, min_depth: TF-slim's width scaling,
      channels = max(int(c · depth_multiplier), min_depth).
    numerics: padding / BN / bias conventions of a reference (conv.py): a
      ConvNumerics or a preset's name, 'tf_slim', 'torchvision', 'googlenet'.
    gating_bias: the gate's affine has a bias (the paper) or not (TF-slim).
    dropout_rate: before the classifier (TF-slim keeps 0.8).
    bn_groups: BN statistics per this many equal groups of the batch
      (layers/norm.py); the trainer sets it from config.bn_sync_devices.
    kernels: 'custom', 'plain' or 'auto' (by platform): the kernel set of
      convs, pools and BN+ReLU (vidjax/kernels/). Same parameters and
      values.
    remat: what the backward pass recomputes instead of keeping: 'none';
      'block', each Inception block from its input (the block outputs are
      kept); 'full', also each stem unit (Conv2d_1a … 2c, the largest
      activations), so only block and stem-unit outputs are kept.

  Activations carry logical axis names (batch, time, height, width,
  channels) and parameters theirs (vidjax/parallel/rules.py); on a mesh with
  a time axis the clip stays split along T through the whole network.
  """
  num_classes: int
  schedule: Sequence[str] = ('sep+gate',) * len(SCHEDULED_BLOCKS)
  stem: str = '3d'
  stem_temporal_kernel: int = 3
  depth_multiplier: float = 1.0
  min_depth: int = 16
  numerics: conv_lib.ConvNumerics | str = conv_lib.TF_SLIM
  gating_bias: bool = False
  dropout_rate: float = 0.2
  # Overrides the reference's BN momentum (TF-slim: 0.999, tuned for runs of
  # hundreds of thousands of steps; short runs want ~0.9 so that the running
  # statistics used at evaluation catch up with the weights).
  bn_momentum: float | None = None
  dtype: Any = None
  bn_groups: int = 1
  kernels: str = 'auto'
  remat: str = 'none'

  def depth(self, channels: int) -> int:
    return max(int(channels * self.depth_multiplier), self.min_depth)

  @nn.compact
  def __call__(self, video: jax.Array, train: bool = False,
               return_features: bool = False):
    if len(self.schedule) != len(SCHEDULED_BLOCKS):
      raise ValueError(f'schedule needs {len(SCHEDULED_BLOCKS)} entries '
                       f'({", ".join(SCHEDULED_BLOCKS)}), got '
                       f'{len(self.schedule)}')
    if self.remat not in REMAT:
      raise ValueError(f'unknown remat {self.remat!r}; known: '
                       f'{", ".join(REMAT)}')
    plan = dict(zip(SCHEDULED_BLOCKS, map(parse_schedule_entry,
                                          self.schedule)))
    kernels = kernels_lib.resolve(self.kernels)
    # The backward pass recomputes a rematerialised module from its input.
    block_cls = (nn.remat(InceptionBlock, static_argnums=(2,))
                 if self.remat != 'none' else InceptionBlock)
    unit_cls = (nn.remat(conv_lib.STConv, static_argnums=(2,))
                if self.remat == 'full' else conv_lib.STConv)
    unit = functools.partial(unit_cls, bn_groups=self.bn_groups,
                             kernels=kernels, dtype=self.dtype)
    numerics = conv_lib.resolve_numerics(self.numerics)
    if self.bn_momentum is not None:
      numerics = dataclasses.replace(numerics, bn_momentum=self.bn_momentum)
    # Convs pad inside STConv; this is the max-pools' padding.
    padding = numerics.pool_padding or numerics.padding
    features = {}
    x = video.astype(self.dtype) if self.dtype else video
    x = rules_lib.constrain(x, rules_lib.VIDEO)

    x = unit(
        self.depth(64), 7, temporal_kernel_size=self.stem_temporal_kernel,
        # TF-slim strides the stem by 2 in time even when it is 2D (I2D).
        kind=self.stem, stride=2, temporal_stride=2, numerics=numerics,
        name='Conv2d_1a_7x7')(x, train)
    features['Conv2d_1a_7x7'] = x
    x = max_pool(x, (1, 3, 3), (1, 2, 2), padding, kernels)
    x = unit(self.depth(64), 1, numerics=numerics,
             name='Conv2d_2b_1x1')(x, train)
    kind, gated = plan['Conv2d_2c_3x3']
    x = unit(self.depth(192), 3, temporal_kernel_size=3, kind=kind,
             numerics=numerics, name='Conv2d_2c_3x3')(x, train)
    if gated:
      x = SelfGating(self.gating_bias, dtype=self.dtype,
                     name='Conv2d_2c_3x3_gating')(x)
    features['Conv2d_2c_3x3'] = x

    for name, widths in INCEPTION_WIDTHS.items():
      if name in POOLS_BEFORE:
        pool_name, window, strides = POOLS_BEFORE[name]
        x = max_pool(x, window, strides, padding, kernels)
        features[pool_name] = x
      kind, gated = plan[name]
      x = block_cls(tuple(map(self.depth, widths)), kind, gated,
                    self.gating_bias, numerics, dtype=self.dtype,
                    bn_groups=self.bn_groups, kernels=kernels,
                    name=name)(x, train)
      features[name] = x

    logits = self.head(x, train)
    features['logits'] = logits
    return (logits, features) if return_features else logits

  def head(self, x, train):
    # TF-slim's head: [2, 7, 7] average pool (shrunk for small inputs), a
    # 1×1×1 conv, then the mean over the remaining time steps. For inputs
    # larger than 224² we also average the remaining spatial positions
    # (fully-convolutional testing) where TF-slim would fail to squeeze.
    window = tuple(min(n, k) for n, k in zip(x.shape[1:4], (2, 7, 7)))
    x = nn.avg_pool(x, window, strides=(1, 1, 1), padding='VALID')
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    x = nn.Dense(self.num_classes,
                 kernel_init=nn.with_logical_partitioning(
                     conv_lib.default_kernel_init, ('conv_in', 'classes')),
                 bias_init=nn.with_logical_partitioning(
                     nn.initializers.zeros, ('classes',)),
                 dtype=self.dtype, name='Logits')(x)
    return jnp.mean(x, axis=(1, 2, 3)).astype(jnp.float32)


# -----------------------------------------------------------------------------
# The models of the family, by name (collected by vidjax/models/registry.py).
# -----------------------------------------------------------------------------

_N = len(SCHEDULED_BLOCKS)

# The network surgery of Xie et al. (Fig. 2): split the scheduled blocks at a
# max-pool. Bottom-heavy models keep 3D convs (and a 3D stem) below the split
# and 2D above; top-heavy models the reverse, with a 2D stem. TF-slim can only
# express the top-heavy half (`temporal_conv_startat`); both are schedules here.
SPLIT_POINTS = {  # Pool name → index of the first scheduled block above it.
    'MaxPool_3a': SCHEDULED_BLOCKS.index('Mixed_3b'),
    'MaxPool_4a': SCHEDULED_BLOCKS.index('Mixed_4b'),
    'MaxPool_5a': SCHEDULED_BLOCKS.index('Mixed_5b'),
}


def heavy_schedule(kind: str, split: str, bottom: bool) -> tuple[str, ...]:
  """`kind` ('3d' or 'sep') on one side of `split`, '2d' on the other."""
  first_above = SPLIT_POINTS[split]
  below, above = (kind, '2d') if bottom else ('2d', kind)
  return tuple(below if i < first_above else above for i in range(_N))


# What a config may set (`config.model.*`). `bn_groups` is not among them:
# the trainer sets it from `config.bn_sync_devices`.
OPTIONS = ('schedule', 'stem', 'stem_temporal_kernel', 'depth_multiplier',
           'min_depth', 'numerics', 'gating_bias', 'dropout_rate',
           'bn_momentum', 'dtype', 'kernels', 'remat')


def _spec(name: str, normalization: str = 'inception', **defaults):
  # TF-slim layout (the paper's code) unless said otherwise: trained on
  # [-1, 1] pixels.
  return ModelSpec(name, InceptionVideoNet, defaults, family='inception',
                   head='Logits', normalization=normalization,
                   option_names=OPTIONS)


def _bottom_heavy(name: str, kind: str, split: str, stem_temporal_kernel):
  return _spec(name, schedule=heavy_schedule(kind, split, bottom=True),
               stem='3d', stem_temporal_kernel=stem_temporal_kernel)


def _top_heavy(name: str, kind: str, split: str):
  return _spec(name, schedule=heavy_schedule(kind, split, bottom=False),
               stem='2d', stem_temporal_kernel=1)


SPECS = (
    # S3D-G and its ablations.
    _spec('s3dg', schedule=('sep+gate',) * _N, stem='3d',
          stem_temporal_kernel=3),
    _spec('s3d', schedule=('sep',) * _N, stem='3d', stem_temporal_kernel=3),
    _spec('i3d', schedule=('3d',) * _N, stem='3d', stem_temporal_kernel=7),
    _spec('i2d', schedule=('2d',) * _N, stem='2d', stem_temporal_kernel=1),
    # torchvision's S3D (`torchvision.models.video.s3d`): separable stem
    # with a temporal kernel of 7, BN after both halves of every separable
    # conv, symmetric padding, no gating. Its checkpoints load into this
    # layout and expect torchvision's Kinetics statistics.
    _spec('s3d_torchvision', normalization='kinetics',
          schedule=('sep',) * _N, stem='sep', stem_temporal_kernel=7,
          numerics=conv_lib.TORCHVISION),
    # The surgery at each split, I3D (stem temporal kernel 7) and S3D (3).
    _bottom_heavy('bottom_heavy_i3d_3a', '3d', 'MaxPool_3a', 7),
    _bottom_heavy('bottom_heavy_i3d_4a', '3d', 'MaxPool_4a', 7),
    _bottom_heavy('bottom_heavy_i3d_5a', '3d', 'MaxPool_5a', 7),
    _bottom_heavy('bottom_heavy_s3d_3a', 'sep', 'MaxPool_3a', 3),
    _bottom_heavy('bottom_heavy_s3d_4a', 'sep', 'MaxPool_4a', 3),
    _bottom_heavy('bottom_heavy_s3d_5a', 'sep', 'MaxPool_5a', 3),
    _top_heavy('top_heavy_i3d_3a', '3d', 'MaxPool_3a'),
    _top_heavy('top_heavy_i3d_4a', '3d', 'MaxPool_4a'),
    _top_heavy('top_heavy_i3d_5a', '3d', 'MaxPool_5a'),
    _top_heavy('top_heavy_s3d_3a', 'sep', 'MaxPool_3a'),
    _top_heavy('top_heavy_s3d_4a', 'sep', 'MaxPool_4a'),
    _top_heavy('top_heavy_s3d_5a', 'sep', 'MaxPool_5a'),
    # Fast-S3D: the paper's speed-oriented S3D, top-heavy with separable
    # convs. Our text of the paper does not pin its split; we take
    # MaxPool_4a, the split whose top-heavy models the paper's Fig. 4 shows
    # at the knee of the accuracy-FLOPs curve (40.75 G MACs at 64×224² vs
    # S3D's 64.18 G). Any other split is `top_heavy_s3d_3a` / `_5a`.
    _top_heavy('fast_s3d', 'sep', 'MaxPool_4a'),
)
