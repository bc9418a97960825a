"""The vidjax TimeSformer a checkpoint converts into.

`name`'s model with the sizes the tensors give (structure.py), the head
count the tensors cannot give, and the overrides of `load_torch`; what the
checkpoint contradicts is one error.
"""
from typing import Any, Mapping

import flax.linen as nn

from vidjax.convert.timesformer.source import CONFIG_FILE
from vidjax.convert.timesformer.structure import Structure
from vidjax.errors import VidjaxError
from vidjax.models import create_model
from vidjax.models import registry

FAMILY = 'timesformer'
# Overrides compared with what the checkpoint says.
_CHECKED = ('embed_dim', 'depth', 'patch_size', 'mlp_ratio', 'qkv_bias',
            'scheme')
OPTIONS = ('num_heads', 'num_classes', 'seed', 'num_frames',
           'image_size') + _CHECKED
# The standard ViT's heads by width (timm's Ti/S/B/L/H; 64 per head).
_STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


def model_names() -> list[str]:
  """The registered models this converter fills: the TimeSformer family."""
  return [name for name in registry.list_models()
          if registry.get_spec(name).family == FAMILY]


def check_overrides(overrides: Mapping[str, Any]):
  unknown = sorted(set(overrides) - set(OPTIONS))
  if unknown:
    raise VidjaxError(
        f'unknown TimeSformer conversion option(s) {", ".join(unknown)}; '
        f'known: {", ".join(OPTIONS)}')


def _scheme_names(scheme: str, like: nn.Module) -> list[str]:
  """Registered names of `scheme`, those of `like`'s size first."""
  same, other = [], []
  for name in model_names():
    model = create_model(name, num_classes=1)
    if model.scheme != scheme:
      continue
    size = (model.num_frames, model.image_size)
    (same if size == (like.num_frames, like.image_size) else other).append(
        name)
  return same + other


def _num_heads(structure: Structure, overrides, where: str) -> int:
  heads = structure.num_heads
  given = overrides.get('num_heads')
  if given is not None and heads is not None and given != heads:
    raise VidjaxError(f'{where}: num_heads={given} but {CONFIG_FILE} has '
                      f'num_attention_heads {heads}')
  heads = heads if given is None else given
  layout = structure.layout
  if heads is None and layout.standard_heads:
    heads = _STANDARD_HEADS.get(structure.embed_dim)
  if heads is None:
    raise VidjaxError(
        f'{where} ({layout.name}, {structure.embed_dim} wide) does not say '
        'how many attention heads it has (the tensors cannot tell): pass '
        'num_heads=... (config.json\'s num_attention_heads), or convert the '
        'Hugging Face model directory with its config.json')
  if not isinstance(heads, int) or heads <= 0 or structure.embed_dim % heads:
    raise VidjaxError(f'{where}: num_heads={heads!r} does not divide the '
                      f'width {structure.embed_dim}')
  return heads


def build_model(name: str, structure: Structure, overrides,
                where: str) -> tuple[nn.Module, bool]:
  """(the model to fill, whether its head is fresh)."""
  requested = create_model(name, num_classes=1)
  layout = structure.layout
  if structure.scheme is not None and structure.scheme != requested.scheme:
    names = _scheme_names(structure.scheme, requested)
    raise VidjaxError(
        f'{where} is a {structure.scheme} TimeSformer ({layout.name}; from '
        f'{structure.scheme_from}), model {name} is {requested.scheme}: '
        f'the schemes compute different things; convert it as '
        f'{names[0] if names else "a " + structure.scheme + " model"}')
  read = dict(embed_dim=structure.embed_dim, depth=structure.depth,
              patch_size=structure.patch_size,
              mlp_ratio=structure.mlp_ratio, qkv_bias=structure.qkv_bias,
              scheme=requested.scheme if structure.scheme is None else
              structure.scheme)
  if structure.scheme is not None:
    read['image_size'] = structure.grid * structure.patch_size
    if structure.num_frames is not None:
      read['num_frames'] = structure.num_frames
  wrong = [f'{key}={overrides[key]!r} but the checkpoint has {value!r}'
           for key, value in read.items()
           if key in overrides and overrides[key] != value]
  if wrong:
    raise VidjaxError(
        f'{where} ({layout.name}) does not fit the model asked for: '
        + '; '.join(wrong) + ' (the converter reads the sizes off the '
        'tensors; the model resizes its embeddings to other clip lengths and '
        'frame sizes at run time)')
  options = {k: v for k, v in read.items() if k != 'scheme'}
  options['num_heads'] = _num_heads(structure, overrides, where)
  if structure.scheme is None:  # A ViT: the target's clip and frame size.
    size = overrides.get('image_size', requested.image_size)
    if size % structure.patch_size:
      raise VidjaxError(f'image_size={size} does not divide into '
                        f'{structure.patch_size}x{structure.patch_size} '
                        'patches')
    options['image_size'] = size
    options['num_frames'] = overrides.get('num_frames', requested.num_frames)
  elif 'num_frames' not in options:  # Space-only: no time embedding.
    options['num_frames'] = overrides.get('num_frames', requested.num_frames)
  num_classes = overrides.get('num_classes', structure.num_classes)
  if num_classes is None:
    raise VidjaxError(
        f'{where} ({layout.name}) has no classifier ({layout.head}.weight): '
        'pass num_classes=... for a freshly initialised head')
  fresh_head = num_classes != structure.num_classes
  return create_model(name, num_classes=num_classes, **options), fresh_head
