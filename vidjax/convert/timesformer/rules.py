"""Each vidjax TimeSformer variable's source tensor, in any source layout.

A TimeSformer checkpoint fills its own scheme's model one for one. An
ImageNet ViT (`layout.vit`) initialises every scheme as the paper does
(the official `load_pretrained`): each block's extra attention steps —
`temporal_*` (divided, axial), `width_*` (axial), `local_*` (L+G) — get
copies of the block's `norm1` and `attn` (qkv and proj); their output
projections (`temporal_fc`, `width_fc`, `local_fc`) and `time_embed` are
zeros, as the models initialise them (`initialise`).

The embedding resize: the position embedding is resized to the model's
grid with the model's run-time rule (2-D nearest; the official
`load_pretrained` interpolates the flattened 196 positions in 1-D instead,
which does not keep rows and columns apart).
"""
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from vidjax.convert import mapping
from vidjax.convert.timesformer.structure import Structure
from vidjax.layers import attention as attention_lib
from vidjax.models import timesformer

# Prefixes of the steps the paper's other schemes add before the ViT's own.
_EXTRA_STEPS = ('temporal_', 'width_', 'local_')


def _dense_kernel(weight):
  if weight.ndim != 2:
    raise ValueError(f'want a 2-D linear weight, got {weight.shape}')
  return weight.T


def _patch_kernel(weight):
  """Conv [D, 3, kh, kw] → the Dense [kh·kw·3, D] on (kh, kw, c) patches."""
  if weight.ndim != 4:
    raise ValueError(f'want a 4-D conv weight, got {weight.shape}')
  return weight.transpose(2, 3, 1, 0).reshape(-1, weight.shape[0])


def _resized_pos(grid: int):
  def transform(pos):
    return np.asarray(timesformer.resize_pos_embed(pos, (grid, grid)))
  return transform


def _same(x):
  return x


# A vidjax parameter → (the torch tensor's name, its layout transform).
_TENSOR = {'scale': ('weight', _same), 'bias': ('bias', _same),
           'kernel': ('weight', _dense_kernel)}


def rules(structure: Structure, model: nn.Module,
          targets: Mapping[mapping.Path, Any], fresh_head: bool
          ) -> tuple[list[mapping.Rule], set[mapping.Path]]:
  """(rules, fresh targets): each variable's source, or none (initialised)."""
  layout = structure.layout
  out, fresh = [], set()
  grid = model.image_size // model.patch_size
  out.append(mapping.Rule(layout.cls, ('params', 'cls_token')))
  out.append(mapping.Rule(
      layout.pos, ('params', 'pos_embed'),
      _resized_pos(grid) if structure.grid != grid else _same))
  if ('params', 'time_embed') in targets:
    if layout.vit:
      fresh.add(('params', 'time_embed'))
    else:
      out.append(mapping.Rule(layout.time, ('params', 'time_embed')))
  out.append(mapping.Rule(f'{layout.patch}.weight',
                          ('params', 'patch_embed', 'kernel'), _patch_kernel))
  out.append(mapping.Rule(f'{layout.patch}.bias',
                          ('params', 'patch_embed', 'bias')))
  for path in targets:
    if path[0] != 'params' or not path[1].startswith('blocks_'):
      continue
    index = int(path[1].removeprefix('blocks_'))
    module, param = '/'.join(path[2:-1]), path[-1]
    if layout.vit:
      step = next((p for p in _EXTRA_STEPS if module.startswith(p)), '')
      if module == f'{step}fc':
        fresh.add(path)  # The extra steps' zero output projections.
        continue
      module = module.removeprefix(step)
    source = layout.modules.get(module)
    if source is None or param not in _TENSOR:
      continue  # Reported by `assign` as a variable no tensor maps to.
    suffix, transform = _TENSOR[param]
    out.append(mapping.Rule(
        f'{layout.block.format(i=index)}{source}.{suffix}', path, transform))
  out.append(mapping.Rule(f'{layout.norm}.weight', ('params', 'norm',
                                                    'scale')))
  out.append(mapping.Rule(f'{layout.norm}.bias', ('params', 'norm', 'bias')))
  if fresh_head:
    fresh |= {('params', 'head', 'kernel'), ('params', 'head', 'bias')}
  else:
    out.append(mapping.Rule(f'{layout.head}.weight',
                            ('params', 'head', 'kernel'), _dense_kernel))
    out.append(mapping.Rule(f'{layout.head}.bias', ('params', 'head',
                                                    'bias')))
  return out, fresh


def initialise(fresh: set[mapping.Path], targets, seed: int):
  """The model's own initialisation of the variables no tensor fills."""
  out = {}
  for path in fresh:
    shape = tuple(targets[path].shape)
    if path == ('params', 'head', 'kernel'):
      value = attention_lib.default_kernel_init(jax.random.key(seed), shape)
    else:  # time_embed, *_fc and biases: zeros, as the model initialises.
      value = np.zeros(shape)
    out[path] = np.asarray(value, dtype=np.float32)
  return out
