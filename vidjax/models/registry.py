"""Models by name: `create_model(name, num_classes=..., **options)`.

Every model family declares its models beside its own code, as a literal
table `SPECS` of `ModelSpec`s (vidjax/models/spec.py): the factory, the
model's own defaults, the options a config may set, the family, the name
of its classifier module and the input normalisation its reference weights
expect. This module collects those tables; the families do not import it.
Options (a config's `model` section) replace the defaults, so a config can,
e.g., shrink S3D-G with `depth_multiplier` or set TSM's segment count; an
option the model does not declare is a VidjaxError.
"""
from typing import Any

import flax.linen as nn

from vidjax.errors import VidjaxError
from vidjax.models import inception
from vidjax.models import resnet
from vidjax.models import timesformer
from vidjax.models.spec import ModelSpec

__all__ = ['ModelSpec', 'create_model', 'get_spec', 'list_models']

FAMILIES = (inception, resnet, timesformer)


def _collect(families) -> dict[str, ModelSpec]:
  specs = {}
  for family in families:
    for spec in family.SPECS:
      if spec.name in specs:
        raise ValueError(f'model {spec.name!r} is declared twice '
                         f'({specs[spec.name].family}, {spec.family})')
      specs[spec.name] = spec
  return specs


_REGISTRY: dict[str, ModelSpec] = _collect(FAMILIES)


def list_models() -> list[str]:
  return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
  """The spec declared as `name`, or a VidjaxError listing the known ones."""
  if name not in _REGISTRY:
    raise VidjaxError(f'unknown model {name!r}; known models: '
                      f'{", ".join(list_models())}')
  return _REGISTRY[name]


def create_model(name: str, *, num_classes: int, **options: Any) -> nn.Module:
  """The linen Module called `name` with the given class count.

  Raises:
    VidjaxError: an unknown model, or an option it does not declare
      (`get_spec(name).options` lists the declared ones).
  """
  return get_spec(name).create(num_classes, **options)
