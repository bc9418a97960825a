"""Models by name: `create_model(name, num_classes=..., **overrides)`.

Each entry is a factory of keyword defaults; overrides (from a config's
`model` section) replace them, so a config can, e.g., shrink S3D-G with
`depth_multiplier` or rewrite its block schedule.
"""
import functools
from typing import Any, Callable

import flax.linen as nn

from vidjax.errors import VidjaxError
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
