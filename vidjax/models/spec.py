"""`ModelSpec`: what the rest of vidjax knows of a model by name.

Each family module (inception.py, resnet.py, timesformer.py) declares its
models as a literal table of specs; models/registry.py collects the tables.
This module sits below both, so neither imports the other.
"""
from collections.abc import Callable, Mapping
import dataclasses
import types
from typing import Any

import flax.linen as nn

from vidjax.errors import VidjaxError


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A registered model: its factory, its options and what it expects.

  Attributes:
    name: the registry name.
    factory: the linen Module class (or a callable returning a Module).
    defaults: this model's own values of factory arguments (its schedule,
      depth, attention scheme, ...); the rest keep the factory's defaults.
    family: 'inception', 'resnet', ...: models of one family share a
      parameter layout and a converter.
    head: the classifier module's name at the top of the parameter tree.
      `init_from` keeps it fresh when the class count differs.
    normalization: the `data.normalization` preset its reference weights
      were trained with (vidjax/data/transforms.py); configs use it.
    option_names: the factory arguments a config may set
      (`config.model.*`); `create` rejects any other.
  """
  name: str
  factory: Callable[..., nn.Module]
  defaults: Mapping[str, Any]
  family: str
  head: str
  normalization: str
  option_names: tuple[str, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, 'defaults',
                       types.MappingProxyType(dict(self.defaults)))

  @property
  def options(self) -> Mapping[str, Any]:
    """Each declared option and its default for this model.

    The default is this model's own (`defaults`), else the factory's field
    default: the factory's signature stays the one home of its defaults.
    """
    fields = ({f.name: f.default for f in dataclasses.fields(self.factory)}
              if dataclasses.is_dataclass(self.factory) else {})
    options = {}
    for option in self.option_names:
      default = self.defaults.get(option,
                                  fields.get(option, dataclasses.MISSING))
      if default is dataclasses.MISSING:
        raise TypeError(f'{self.factory.__name__} has no default for '
                        f'{option!r}, declared as an option of model '
                        f'{self.name!r}')
      options[option] = default
    return types.MappingProxyType(options)

  def create(self, num_classes: int, **overrides: Any) -> nn.Module:
    """The model with `overrides` (declared options only) over its defaults.

    Raises:
      VidjaxError: an option the model does not declare.
    """
    undeclared = sorted(set(overrides) - set(self.option_names))
    if undeclared:
      raise VidjaxError(
          f'bad options for model {self.name!r}: {", ".join(undeclared)} '
          f'{"is" if len(undeclared) == 1 else "are"} not among its options '
          f'({", ".join(self.option_names) or "none"})')
    return self.factory(num_classes=num_classes,
                        **{**self.defaults, **overrides})
