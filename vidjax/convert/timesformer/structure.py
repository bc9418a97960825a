"""What a checkpoint says about its network, read off its tensors.

Width (cls_token), depth (blocks), patch size (the patch conv), the
position grid and so the image size (pos_embed), the clip length
(time_embed), mlp_ratio (fc1), qkv_bias and the attention scheme; a Hugging
Face config.json is checked against them and against the numerics vidjax's
TimeSformer fixes (LayerNorm eps 1e-6, exact GELU).
"""
import dataclasses
from typing import Any, Mapping

from vidjax.convert import mapping
from vidjax.convert.timesformer.detect import first_keys
from vidjax.convert.timesformer.layout import Layout
from vidjax.convert.timesformer.source import CONFIG_FILE
from vidjax.convert.timesformer.source import SourceCheckpoint
from vidjax.errors import VidjaxError
from vidjax.layers import attention as attention_lib
from vidjax.models import timesformer


@dataclasses.dataclass(frozen=True)
class Structure:
  """What the checkpoint says about the network."""
  layout: Layout
  scheme: str | None  # None: a ViT.
  scheme_from: str
  embed_dim: int
  depth: int
  patch_size: int
  grid: int
  num_frames: int | None
  mlp_ratio: float
  qkv_bias: bool
  num_heads: int | None
  num_classes: int | None


def _config_value(config, key):
  value = config.get(key)
  if isinstance(value, (list, tuple)):
    if len(set(value)) != 1:
      raise VidjaxError(f'{CONFIG_FILE} has {key} {list(value)}; vidjax '
                        'TimeSformers take square frames and patches')
    value = value[0]
  return value


def _shape(state, key, what: str) -> tuple[int, ...]:
  if key not in state:
    raise VidjaxError(f'not a {what} state dict: it has no {key} '
                      f'(first keys: {first_keys(state)})')
  return tuple(int(n) for n in state[key].shape)


def read_structure(checkpoint: SourceCheckpoint, layout: Layout,
                   state: Mapping[str, Any]) -> Structure:
  """Reads the sizes off the tensors and checks config.json against them."""
  what = layout.name
  width = _shape(state, layout.cls, what)[-1]
  patch = _shape(state, layout.patch + '.weight', what)
  if len(patch) != 4 or patch[2] != patch[3] or patch[1] != 3:
    raise VidjaxError(
        f'{layout.patch}.weight has shape {list(patch)}; a TimeSformer '
        'embeds RGB frames with a square patch conv [D, 3, p, p]')
  tokens = _shape(state, layout.pos, what)
  grid = int(round((tokens[1] - 1) ** 0.5)) if len(tokens) == 3 else 0
  if len(tokens) != 3 or grid * grid != tokens[1] - 1 or not grid:
    raise VidjaxError(f'{layout.pos} has shape {list(tokens)}; want '
                      '[1, 1 + g², D] (a square grid of patch positions)')
  num_frames = None
  if layout.time and layout.time in state:
    num_frames = _shape(state, layout.time, what)[1]
  pattern = layout.block_index()
  indices = {int(m.group(1)) for k in state if (m := pattern.match(k))}
  if not indices:
    raise VidjaxError(f'{checkpoint.where} ({what}) has no blocks '
                      f'({layout.block.format(i=0)}...)')
  depth = max(indices) + 1
  block0 = layout.block.format(i=0)
  hidden = _shape(state, f'{block0}{layout.modules["mlp/fc1"]}.weight',
                  what)[0]
  if int(width * (hidden / width)) != hidden:
    raise VidjaxError(f'{what}: an MLP of {hidden} for width {width} is not '
                      'a ratio vidjax can build (int(D · mlp_ratio))')
  qkv_bias = f'{block0}{layout.modules["attn/qkv"]}.bias' in state
  num_classes = None
  if f'{layout.head}.weight' in state:
    num_classes = mapping.classifier_size(state, f'{layout.head}.weight', 2,
                                          what)

  if layout.vit:
    scheme, scheme_from = None, 'an ImageNet ViT'
  elif checkpoint.config is not None and 'attention_type' in (
      checkpoint.config):
    scheme = checkpoint.config['attention_type']
    scheme_from = f"{CONFIG_FILE}'s attention_type"
  else:
    temporal = f'{block0}{layout.modules["temporal_attn/qkv"]}.weight'
    scheme = ('divided_space_time' if temporal in state else
              'joint_space_time' if num_frames is not None else 'space_only')
    scheme_from = ('its temporal attention tensors' if temporal in state
                   else 'its time embedding without temporal attention'
                   if num_frames is not None else
                   'its lack of a time embedding')
  if scheme is not None and scheme not in timesformer.SCHEMES:
    raise VidjaxError(f'{checkpoint.where}: unknown attention_type '
                      f'{scheme!r}; known: {", ".join(timesformer.SCHEMES)}')

  num_heads = None
  config = checkpoint.config
  if config is not None:
    num_heads = config.get('num_attention_heads')
    _check_config(checkpoint, layout, dict(
        hidden_size=(width, layout.cls), num_hidden_layers=(depth, 'blocks'),
        patch_size=(patch[2], f'{layout.patch}.weight'),
        image_size=(grid * patch[2], layout.pos),
        num_frames=(num_frames, layout.time),
        intermediate_size=(hidden, f'{block0}{layout.modules["mlp/fc1"]}'),
        qkv_bias=(qkv_bias, f'{block0}{layout.modules["attn/qkv"]}.bias'),
        num_channels=(3, f'{layout.patch}.weight')))
  return Structure(layout, scheme, scheme_from, width, depth, patch[2], grid,
                   num_frames, hidden / width, qkv_bias, num_heads,
                   num_classes)


def _check_config(checkpoint: SourceCheckpoint, layout: Layout,
                  tensor_values: Mapping[str, tuple[Any, str]]):
  """config.json agrees with the tensors and with the model's numerics."""
  config = checkpoint.config
  wrong = []
  for key, (value, source) in tensor_values.items():
    if key not in config or value is None:
      continue
    stated = _config_value(config, key)
    if key == 'num_frames' and layout.vit:
      continue
    if stated != value:
      wrong.append(f'{key} {stated!r} but {source} gives {value!r}')
  act = config.get('hidden_act', 'gelu')
  if act != 'gelu':
    wrong.append(f"hidden_act {act!r} (vidjax's TimeSformer uses the exact "
                 "erf GELU, 'gelu')")
  eps = config.get('layer_norm_eps', attention_lib.LAYER_NORM_EPSILON)
  if not layout.vit and eps != attention_lib.LAYER_NORM_EPSILON:
    wrong.append(f'layer_norm_eps {eps} (vidjax\'s TimeSformer uses '
                 f'{attention_lib.LAYER_NORM_EPSILON}, as the official one)')
  if wrong:
    raise VidjaxError(f'{checkpoint.where}: {CONFIG_FILE} does not fit: '
                      + '; '.join(wrong))
