"""Models by name: `create_model(name, num_classes=..., **overrides)`.

Each entry is a factory of keyword defaults; overrides (from a config's
`model` section) replace them, so a config can, e.g., shrink S3D-G with
`depth_multiplier` or rewrite its block schedule.
"""
import functools
from typing import Any, Callable

import flax.linen as nn

from vidjax.errors import VidjaxError
from vidjax.layers import conv as conv_lib
from vidjax.models import inception

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str, factory: Callable[..., nn.Module], **defaults: Any):
  _REGISTRY[name] = functools.partial(factory, **defaults)


def list_models() -> list[str]:
  return sorted(_REGISTRY)


def create_model(name: str, *, num_classes: int, **overrides: Any) -> nn.Module:
  """Returns the linen Module called `name` with the given class count."""
  if name not in _REGISTRY:
    raise VidjaxError(f'unknown model {name!r}; known models: '
                      f'{", ".join(list_models())}')
  try:
    return _REGISTRY[name](num_classes=num_classes, **overrides)
  except TypeError as e:
    raise VidjaxError(f'bad options for model {name!r}: {e}') from None


_N = len(inception.SCHEDULED_BLOCKS)
# TF-slim layout (the paper's code): S3D-G and its ablations.
register('s3dg', inception.InceptionVideoNet, schedule=('sep+gate',) * _N,
         stem='3d', stem_temporal_kernel=3)
register('s3d', inception.InceptionVideoNet, schedule=('sep',) * _N,
         stem='3d', stem_temporal_kernel=3)
register('i3d', inception.InceptionVideoNet, schedule=('3d',) * _N,
         stem='3d', stem_temporal_kernel=7)
register('i2d', inception.InceptionVideoNet, schedule=('2d',) * _N,
         stem='2d', stem_temporal_kernel=1)
# torchvision's S3D (`torchvision.models.video.s3d`): separable stem with a
# temporal kernel of 7, BN after both halves of every separable conv,
# symmetric padding, no gating. Its checkpoints load into this layout.
register('s3d_torchvision', inception.InceptionVideoNet,
         schedule=('sep',) * _N, stem='sep', stem_temporal_kernel=7,
         numerics=conv_lib.TORCHVISION)


# The network surgery of Xie et al. (Fig. 2): split the scheduled blocks at a
# max-pool. Bottom-heavy models keep 3D convs (and a 3D stem) below the split
# and 2D above; top-heavy models the reverse, with a 2D stem. TF-slim can only
# express the top-heavy half (`temporal_conv_startat`); both are schedules here.
SPLIT_POINTS = {  # Pool name → index of the first scheduled block above it.
    'MaxPool_3a': inception.SCHEDULED_BLOCKS.index('Mixed_3b'),
    'MaxPool_4a': inception.SCHEDULED_BLOCKS.index('Mixed_4b'),
    'MaxPool_5a': inception.SCHEDULED_BLOCKS.index('Mixed_5b'),
}


def heavy_schedule(kind: str, split: str, bottom: bool) -> tuple[str, ...]:
  """`kind` ('3d' or 'sep') on one side of `split`, '2d' on the other."""
  first_above = SPLIT_POINTS[split]
  below, above = (kind, '2d') if bottom else ('2d', kind)
  return tuple(below if i < first_above else above for i in range(_N))


for _split in SPLIT_POINTS:
  _tag = _split.split('_')[1]  # '3a', '4a', '5a'.
  for _kind, _family, _stem_kt in (('3d', 'i3d', 7), ('sep', 's3d', 3)):
    register(f'bottom_heavy_{_family}_{_tag}', inception.InceptionVideoNet,
             schedule=heavy_schedule(_kind, _split, bottom=True), stem='3d',
             stem_temporal_kernel=_stem_kt)
    register(f'top_heavy_{_family}_{_tag}', inception.InceptionVideoNet,
             schedule=heavy_schedule(_kind, _split, bottom=False), stem='2d',
             stem_temporal_kernel=1)

# Fast-S3D: the paper's speed-oriented S3D, top-heavy with separable convs.
# Our text of the paper does not pin its split; we take MaxPool_4a, the split
# whose top-heavy models the paper's Fig. 4 shows at the knee of the
# accuracy-FLOPs curve (40.75 G MACs at 64×224² vs S3D's 64.18 G). Any other
# split is `top_heavy_s3d_3a` / `_5a`.
register('fast_s3d', inception.InceptionVideoNet,
         schedule=heavy_schedule('sep', 'MaxPool_4a', bottom=False),
         stem='2d', stem_temporal_kernel=1)
