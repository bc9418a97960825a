"""TimeSformer checkpoints and ImageNet ViTs → vidjax TimeSformer.

  model, variables = convert.load_torch('timesformer', 'hf_model_dir')
  model, variables = convert.load_torch('timesformer', state, num_heads=4)

Four source layouts, one file each, recognised from the path and the keys
(detect.py):

  hf_timesformer.py  Hugging Face TimeSformer: a directory of
                     `TimesformerForVideoClassification` or its state dict.
  official.py        facebookresearch/TimeSformer's `.pyth`.
  timm_vit.py        a timm ImageNet ViT (the paper's initialisation).
  hf_vit.py          Hugging Face `ViTModel` / `ViTForImageClassification`.

and a shared core: source.py reads directories, files (torch.save, .pyth,
.safetensors) and state dicts; structure.py reads the network's sizes off
the tensors; target.py builds the model to fill; rules.py maps each of its
variables to a tensor (and resizes the position embedding).

The network's sizes are read off the tensors: width, depth, patch size,
image size, clip length, mlp_ratio and qkv_bias; the returned model is
`create_model(name, ...)` with those, so `convert.model_options` records
what differs from `name`. The head count is not in the tensors:
config.json's `num_attention_heads`, or the `num_heads` override, or —
official and timm layouts only — the standard ViT's for the width (12 for
768; the official code builds only ViT-B). A bare Hugging Face state dict
needs `num_heads`.

Schemes. A TimeSformer checkpoint holds one scheme (config.json's
`attention_type`, else the keys: temporal_* → divided; a time embedding
without them → joint; neither → space-only) and converts only into a model
of that scheme: another → one error naming the model to use. An ImageNet ViT
initialises every scheme as the paper does (rules.py). The position
embedding is resized to the model's grid (`image_size` override, default
`name`'s). The head is the ViT's when the class counts agree, else fresh
(see Overrides).

Numerics the model fixes: LayerNorm eps 1e-6 and exact GELU. A Hugging Face
TimeSformer config with another `layer_norm_eps` or `hidden_act` is refused
(the logits would differ); for a ViT, which only initialises, the eps (HF
ViT's 1e-12) is ignored.

Overrides (keyword arguments of `load_torch`):
  num_heads    the head count (see above).
  num_classes  the model's class count; default the checkpoint's. Another
               count, or a checkpoint without a classifier, gives a fresh head
               initialised as the model's (truncated normal, std 0.02; zero
               bias) and drops the checkpoint's.
  seed         of that fresh head (default 0).
  num_frames, image_size  for a ViT: the model's clip length and frame side
               (default `name`'s); for a TimeSformer checkpoint they must be
               the checkpoint's (the model resizes its embeddings to other
               clips at run time, as the official code).
  embed_dim, depth, patch_size, mlp_ratio, qkv_bias, scheme  checked against
               the checkpoint: a disagreement (e.g. a width other than the
               one asked for) is an error.
"""
import functools
import re
from typing import Any, Callable

import flax.linen as nn

from vidjax.convert import mapping
from vidjax.convert.timesformer.detect import detect_layout
from vidjax.convert.timesformer.hf_vit import fuse_qkv
from vidjax.convert.timesformer.rules import initialise
from vidjax.convert.timesformer.rules import rules
from vidjax.convert.timesformer.source import read_source
from vidjax.convert.timesformer.source import SourceCheckpoint
from vidjax.convert.timesformer.structure import read_structure
from vidjax.convert.timesformer.target import build_model
from vidjax.convert.timesformer.target import check_overrides
from vidjax.convert.timesformer.target import model_names
from vidjax.convert.timesformer.target import OPTIONS
from vidjax.models import complexity

__all__ = ['OPTIONS', 'SourceCheckpoint', 'converters', 'load',
           'model_names']

_PROBE_FRAMES = 2  # Parameter shapes do not depend on the clip; L+G: even.


def converters() -> dict[str, Callable[..., tuple[nn.Module, dict]]]:
  """{name: converter} for `convert._CONVERTERS`.

  The converters take the source itself (a Hugging Face directory needs its
  config.json) and keyword overrides: `reads_source` tells `load_torch`.
  """
  out = {}
  for name in model_names():
    converter = functools.partial(load, name=name)
    converter.reads_source = True
    out[name] = converter
  return out


def load(source: Any, name: str, **overrides: Any
         ) -> tuple[nn.Module, dict]:
  """(model, {'params'}) of TimeSformer model `name` from `source`.

  Args:
    source: a Hugging Face model directory, a checkpoint file (torch.save,
      .pyth or .safetensors) or a state dict; see the module docstring.
    name: a registered TimeSformer (timesformer, timesformer_joint, ...).
    **overrides: see the module docstring (num_heads, num_classes, ...).

  Raises:
    VidjaxError: unreadable source, a checkpoint of another model family or
      scheme, overrides the checkpoint contradicts, a missing head count,
      or a tensor missing, left over or of the wrong shape.
  """
  check_overrides(overrides)
  checkpoint = read_source(source)
  layout = detect_layout(checkpoint)
  state = fuse_qkv(checkpoint.state, layout)
  structure = read_structure(checkpoint, layout, state)
  where = checkpoint.where
  model, fresh_head = build_model(name, structure, overrides, where)
  targets = mapping.flatten(complexity.abstract_variables(
      model, (1, _PROBE_FRAMES, 2 * model.patch_size, 2 * model.patch_size,
              3)))
  rule_list, fresh = rules(structure, model, targets, fresh_head)
  ignored = [re.compile(p) for p in layout.ignored]
  head_keys = {f'{layout.head}.weight', f'{layout.head}.bias'}

  def ignore(key):
    return (fresh_head and key in head_keys) or any(
        p.fullmatch(key) for p in ignored)

  filled = mapping.assign(
      state, {p: v for p, v in targets.items() if p not in fresh}, rule_list,
      ignore=ignore, description=f'{layout.name} checkpoint into {name}')
  filled.update(initialise(fresh, targets, overrides.get('seed', 0)))
  return model, mapping.unflatten(filled)
