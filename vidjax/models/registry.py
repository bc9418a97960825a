"""Models by name: `create_model(name, num_classes=..., **overrides)`.

Every model family registers its models beside its own code (inception.py,
resnet.py, ...), one `ModelSpec` per name: the module factory and its
keyword defaults, the family, the name of its classifier module and the
input normalisation its reference weights expect. Overrides (a config's
`model` section) replace the defaults, so a config can, e.g., shrink S3D-G
with `depth_multiplier` or set TSM's segment count.
"""
from collections.abc import Callable, Mapping
import dataclasses
import functools
import types
from typing import Any

import flax.linen as nn

from vidjax.errors import VidjaxError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """What the rest of vidjax needs to know of a registered model.

  Attributes:
    name: the registry name.
    factory: the linen Module class (or a callable returning a Module).
    defaults: keyword arguments the factory gets unless overridden.
    family: 'inception', 'resnet', ...: models of one family share a
      parameter layout and a converter.
    head: the classifier module's name at the top of the parameter tree.
      `init_from` keeps it fresh when the class count differs.
    normalization: the `data.normalization` preset its reference weights
      were trained with (vidjax/data/transforms.py); configs use it.
  """
  name: str
  factory: Callable[..., nn.Module]
  defaults: Mapping[str, Any]
  family: str
  head: str
  normalization: str

  def create(self, num_classes: int, **overrides: Any) -> nn.Module:
    options = {**self.defaults, **overrides}
    return self.factory(num_classes=num_classes, **options)


_REGISTRY: dict[str, ModelSpec] = {}


def register(name: str, factory: Callable[..., nn.Module], *, family: str,
             head: str, normalization: str, **defaults: Any) -> ModelSpec:
  """Adds `name` to the registry; a second registration replaces the first."""
  spec = ModelSpec(name, factory, types.MappingProxyType(dict(defaults)),
                   family, head, normalization)
  _REGISTRY[name] = spec
  return spec


def list_models() -> list[str]:
  _load_families()
  return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
  """The spec registered as `name`, or a VidjaxError listing the known ones."""
  _load_families()
  if name not in _REGISTRY:
    raise VidjaxError(f'unknown model {name!r}; known models: '
                      f'{", ".join(list_models())}')
  return _REGISTRY[name]


def create_model(name: str, *, num_classes: int, **overrides: Any) -> nn.Module:
  """Returns the linen Module called `name` with the given class count."""
  spec = get_spec(name)
  try:
    return spec.create(num_classes, **overrides)
  except TypeError as e:
    raise VidjaxError(f'bad options for model {name!r}: {e}') from None


@functools.cache
def _load_families():
  # The families import this module to register; importing them here, on
  # first use rather than at import, keeps that cycle harmless.
  # pylint: disable=g-import-not-at-top,unused-import,import-outside-toplevel
  from vidjax.models import inception  # noqa: F401
  from vidjax.models import resnet  # noqa: F401
  from vidjax.models import timesformer  # noqa: F401
