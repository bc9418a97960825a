"""TimeSformer checkpoints and ImageNet ViTs → vidjax TimeSformer.

  model, variables = convert.load_torch('timesformer', 'hf_model_dir')
  model, variables = convert.load_torch('timesformer', state, num_heads=4)

Sources, recognised from the path and the keys (after `read_state_dict` has
unnested 'state_dict' / 'model' and stripped DataParallel's 'module.'):

  Hugging Face TimeSformer  a directory of `TimesformerForVideoClassification`
      (config.json + model.safetensors or pytorch_model.bin, sharded or not),
      or its bare state dict: timesformer.embeddings.{cls_token,
      position_embeddings, time_embeddings, patch_embeddings.projection.*},
      timesformer.encoder.layer.{i}.{layernorm_before, attention.attention.qkv,
      attention.output.dense, temporal_layernorm,
      temporal_attention.attention.qkv, temporal_attention.output.dense,
      temporal_dense, layernorm_after, intermediate.dense, output.dense}.*,
      timesformer.layernorm.*, classifier.* (`TimesformerModel`'s keys, without
      'timesformer.' and classifier, also convert: pass num_classes).
  official  facebookresearch/TimeSformer's `.pyth`: {'model_state': {...}}
      with a 'model.' prefix: model.cls_token, model.pos_embed,
      model.time_embed, model.patch_embed.proj.*, model.blocks.{i}.{norm1,
      attn.qkv, attn.proj, temporal_norm1, temporal_attn.qkv,
      temporal_attn.proj, temporal_fc, norm2, mlp.fc1, mlp.fc2}.*,
      model.norm.*, model.head.*.
  timm ViT  an ImageNet ViT (the paper's initialisation): cls_token,
      pos_embed, patch_embed.proj.*, blocks.{i}.{norm1, attn.qkv, attn.proj,
      norm2, mlp.fc1, mlp.fc2}.*, norm.*, head.* — the official layout
      without 'model.', time_embed and temporal_*. (So an official space-only
      state dict unwrapped by hand reads as a ViT; for `timesformer_space`
      that is the same conversion.)
  Hugging Face ViT  `ViTModel` / `ViTForImageClassification` (directory or
      state dict; 'vit.' prefix and classifier for the latter):
      embeddings.*, encoder.layer.{i}.{layernorm_before,
      attention.attention.{query,key,value}, attention.output.dense,
      layernorm_after, intermediate.dense, output.dense}.*, layernorm.* — or
      transformers 5's in-memory names layers.{i}.{attention.{q,k,v,o}_proj,
      mlp.fc1, mlp.fc2, ...}. query, key and value are concatenated into the
      fused qkv; the pooler (and a mask token) is not part of TimeSformer
      and is dropped.

The network's sizes are read off the tensors: width (cls_token), depth
(blocks), patch size (the patch conv), the position grid and so the image
size (pos_embed), the clip length (time_embed), mlp_ratio (fc1) and qkv_bias;
the returned model is `create_model(name, ...)` with those, so
`convert.model_options` records what differs from `name`. The head count is
not in the tensors: config.json's `num_attention_heads`, or the `num_heads`
override, or — official and timm layouts only — the standard ViT's for the
width (12 for 768; the official code builds only ViT-B). A bare Hugging Face
state dict needs `num_heads`.

Schemes. A TimeSformer checkpoint holds one scheme (config.json's
`attention_type`, else the keys: temporal_* → divided; a time embedding
without them → joint; neither → space-only) and converts only into a model
of that scheme: another → one error naming the model to use. An ImageNet ViT
initialises every scheme as the paper (the official `load_pretrained`)
does: each block's extra attention steps — `temporal_*` (divided, axial),
`width_*` (axial), `local_*` (L+G) — get copies of the block's `norm1` and
`attn` (qkv and proj); their output projections (`temporal_fc`, `width_fc`,
`local_fc`) and `time_embed` are zeros, as the models initialise them; cls
token, patch embedding, pos_embed, blocks, final norm are the ViT's. The
position embedding is resized to the model's grid (`image_size` override,
default `name`'s) with the model's run-time rule (2-D nearest; the official
`load_pretrained` interpolates the flattened 196 positions in 1-D instead,
which does not keep rows and columns apart). The head is the ViT's when the
class counts agree, else fresh (see Overrides).

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
import dataclasses
import functools
import json
import os
import re
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np

from vidjax.convert import mapping
from vidjax.errors import VidjaxError
from vidjax.layers import attention as attention_lib
from vidjax.models import complexity
from vidjax.models import create_model
from vidjax.models import registry
from vidjax.models import timesformer

FAMILY = 'timesformer'
CONFIG_FILE = 'config.json'
# Weight files of a Hugging Face directory, in the order transformers tries.
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json',
                 'pytorch_model.bin', 'pytorch_model.bin.index.json')
_OFFICIAL_WRAPPER = 'model_state'
_OFFICIAL_PREFIX = 'model.'
# The standard ViT's heads by width (timm's Ti/S/B/L/H; 64 per head).
_STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
# Overrides compared with what the checkpoint says.
_CHECKED = ('embed_dim', 'depth', 'patch_size', 'mlp_ratio', 'qkv_bias',
            'scheme')
OPTIONS = ('num_heads', 'num_classes', 'seed', 'num_frames',
           'image_size') + _CHECKED
# vidjax block modules (besides the extra steps' copies) and their tensors.
_BLOCK_MODULES = ('norm1', 'attn/qkv', 'attn/proj', 'temporal_norm1',
                  'temporal_attn/qkv', 'temporal_attn/proj', 'temporal_fc',
                  'norm2', 'mlp/fc1', 'mlp/fc2')
# Prefixes of the steps the paper's other schemes add before the ViT's own.
_EXTRA_STEPS = ('temporal_', 'width_', 'local_')
_FUSED = '{query,key,value}'
_PROBE_FRAMES = 2  # Parameter shapes do not depend on the clip; L+G: even.


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one code base names a TimeSformer's (or ViT's) tensors.

  Attributes:
    name: for messages.
    cls, pos, time, patch: embedding keys (the patch conv without .weight).
    block: a block's key prefix, with `{i}`.
    modules: vidjax block module → the layout's module (under `block`).
    norm, head: the final norm and the classifier modules.
    vit: an image model, which initialises every scheme.
    qkv_parts: (HF ViT) the separate q, k, v modules fused into attn/qkv.
    ignored: keys (regexes) of tensors TimeSformer has no use for.
    standard_heads: without a stated head count, assume the standard ViT's
      for the width (the official code builds only ViT-B: 12 heads).
  """
  name: str
  cls: str
  pos: str
  time: str
  patch: str
  block: str
  modules: Mapping[str, str]
  norm: str
  head: str
  vit: bool = False
  qkv_parts: tuple[str, ...] = ()
  ignored: tuple[str, ...] = ()
  standard_heads: bool = False

  def block_index(self) -> re.Pattern:
    return re.compile(re.escape(self.block).replace(r'\{i\}', r'(\d+)'))

  def with_prefix(self, prefix: str, head: bool = False) -> 'Layout':
    """Every key under `prefix`; the head too if `head` (HF keeps its
    classifier outside the backbone's prefix)."""
    if not prefix:
      return self
    return dataclasses.replace(
        self, cls=prefix + self.cls, pos=prefix + self.pos,
        time=prefix + self.time if self.time else '',
        patch=prefix + self.patch, block=prefix + self.block,
        norm=prefix + self.norm,
        head=prefix + self.head if head else self.head,
        ignored=tuple(re.escape(prefix) + p for p in self.ignored))


_OFFICIAL_MODULES = {m: m.replace('/', '.') for m in _BLOCK_MODULES}
OFFICIAL = Layout('official TimeSformer', 'cls_token', 'pos_embed',
                  'time_embed', 'patch_embed.proj', 'blocks.{i}.',
                  _OFFICIAL_MODULES, 'norm', 'head', standard_heads=True)
TIMM_VIT = dataclasses.replace(OFFICIAL, name='timm ViT', vit=True)
HF = Layout(
    'Hugging Face TimeSformer', 'embeddings.cls_token',
    'embeddings.position_embeddings', 'embeddings.time_embeddings',
    'embeddings.patch_embeddings.projection', 'encoder.layer.{i}.',
    {'norm1': 'layernorm_before', 'attn/qkv': 'attention.attention.qkv',
     'attn/proj': 'attention.output.dense',
     'temporal_norm1': 'temporal_layernorm',
     'temporal_attn/qkv': 'temporal_attention.attention.qkv',
     'temporal_attn/proj': 'temporal_attention.output.dense',
     'temporal_fc': 'temporal_dense', 'norm2': 'layernorm_after',
     'mlp/fc1': 'intermediate.dense', 'mlp/fc2': 'output.dense'},
    'layernorm', 'classifier')
_HF_VIT_IGNORED = (r'pooler\..*', r'embeddings\.mask_token')
HF_VIT = dataclasses.replace(
    HF, name='Hugging Face ViT', time='', vit=True,
    modules={'norm1': 'layernorm_before',
             'attn/qkv': f'attention.attention.{_FUSED}',
             'attn/proj': 'attention.output.dense',
             'norm2': 'layernorm_after', 'mlp/fc1': 'intermediate.dense',
             'mlp/fc2': 'output.dense'},
    qkv_parts=('attention.attention.query', 'attention.attention.key',
               'attention.attention.value'),
    ignored=_HF_VIT_IGNORED)
# transformers 5 names ViT modules so in memory (save_pretrained writes the
# names above).
HF_VIT_V5 = dataclasses.replace(
    HF_VIT, block='layers.{i}.',
    modules={'norm1': 'layernorm_before',
             'attn/qkv': 'attention.{q,k,v}_proj',
             'attn/proj': 'attention.o_proj', 'norm2': 'layernorm_after',
             'mlp/fc1': 'mlp.fc1', 'mlp/fc2': 'mlp.fc2'},
    qkv_parts=('attention.q_proj', 'attention.k_proj', 'attention.v_proj'))


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A source's tensors and what came with them.

  Attributes:
    state: flat {key: tensor}.
    config: a Hugging Face config.json's contents, or None.
    where: the source, for messages.
    wrapped: came as an official {'model_state': ...} (a TimeSformer, not a
      ViT, whatever its keys).
  """
  state: Mapping[str, Any]
  config: Mapping[str, Any] | None
  where: str
  wrapped: bool = False


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


def model_names() -> list[str]:
  """The registered models this converter fills: the TimeSformer family."""
  return [name for name in registry.list_models()
          if registry.get_spec(name).family == FAMILY]


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


# -----------------------------------------------------------------------------
# Reading the source.
# -----------------------------------------------------------------------------


def _read_safetensors(path: str) -> dict[str, Any]:
  try:
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise VidjaxError('reading a .safetensors file needs safetensors '
                      '(pip install safetensors)') from None
  try:
    return dict(safetensors.numpy.load_file(path))
  except (TypeError, ValueError):
    # numpy has no bfloat16: read through torch, which `to_numpy` widens.
    try:
      import safetensors.torch  # pylint: disable=g-import-not-at-top
      return dict(safetensors.torch.load_file(path))
    except ImportError:
      raise VidjaxError(f'{path} holds tensors numpy cannot hold (bfloat16?);'
                        ' reading it needs torch') from None
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(f'cannot read {path}: {type(e).__name__}: {e}') from None


def _read_weights_file(path: str) -> dict[str, Any]:
  from vidjax import convert  # pylint: disable=g-import-not-at-top
  if path.endswith('.safetensors'):
    return _read_safetensors(path)
  return convert._read_torch_file(path)  # pylint: disable=protected-access


def _read_directory(directory: str) -> Checkpoint:
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise VidjaxError(
        f'{directory} is a directory without {CONFIG_FILE}: a Hugging Face '
        f'model directory holds {CONFIG_FILE} and model.safetensors or '
        'pytorch_model.bin (save_pretrained writes both); to convert a bare '
        'state dict, pass its file and the hyper-parameters it lacks '
        '(num_heads=...)')
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise VidjaxError(f'cannot read {config_path}: {e}') from None
  if not isinstance(config, dict):
    raise VidjaxError(f'{config_path} is not a JSON object')
  weights = next((f for f in _WEIGHT_FILES
                  if os.path.isfile(os.path.join(directory, f))), None)
  if weights is None:
    raise VidjaxError(f'{directory} has {CONFIG_FILE} but no weights: none '
                      f'of {", ".join(_WEIGHT_FILES)}')
  path = os.path.join(directory, weights)
  if weights.endswith('.index.json'):
    try:
      with open(path) as f:
        shards = sorted(set(json.load(f)['weight_map'].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise VidjaxError(f'cannot read the shard index {path}: {e}') from None
    state = {}
    for shard in shards:
      state.update(_read_weights_file(os.path.join(directory, shard)))
  else:
    state = _read_weights_file(path)
  return Checkpoint(_flat_state(state), config, directory)


def _flat_state(source: Any) -> dict[str, Any]:
  from vidjax import convert  # pylint: disable=g-import-not-at-top
  return convert.read_state_dict(source)


def read_source(source: Any) -> Checkpoint:
  """The tensors (and any config.json) of a directory, file or state dict."""
  where = 'state dict'
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    where = path
    if os.path.isdir(path):
      return _read_directory(path)
    if not os.path.isfile(path):
      raise VidjaxError(f'no such checkpoint file or directory: {path}')
    source = _read_weights_file(path)
  wrapped = (isinstance(source, Mapping) and
             isinstance(source.get(_OFFICIAL_WRAPPER), Mapping))
  if wrapped:  # PySlowFast's checkpoint: epoch, optimizer_state, cfg, ...
    source = source[_OFFICIAL_WRAPPER]
  return Checkpoint(_flat_state(source), None, where, wrapped)


# -----------------------------------------------------------------------------
# What the checkpoint holds.
# -----------------------------------------------------------------------------


def _first_keys(state: Mapping[str, Any], count: int = 5) -> str:
  return ', '.join(list(state)[:count]) or 'none'


def detect_layout(checkpoint: Checkpoint) -> Layout:
  """The checkpoint's layout, or one error for other models."""
  state, config = checkpoint.state, checkpoint.config
  keys = list(state)
  if config is not None:
    model_type = config.get('model_type')
    if model_type not in ('timesformer', 'vit'):
      raise VidjaxError(
          f'{checkpoint.where}: {CONFIG_FILE} has model_type '
          f'{model_type!r}; the TimeSformer converter reads Hugging Face '
          "'timesformer' (TimesformerForVideoClassification) and 'vit' "
          '(ViTModel, ViTForImageClassification) directories')
  if all(k.startswith(_OFFICIAL_PREFIX) for k in keys):
    return OFFICIAL.with_prefix(_OFFICIAL_PREFIX, head=True)
  if checkpoint.wrapped or 'time_embed' in state or any(
      '.temporal_attn.' in k for k in keys):
    return OFFICIAL
  if TIMM_VIT.patch + '.weight' in state:
    return TIMM_VIT
  for prefix in ('timesformer.', 'vit.', ''):
    if f'{prefix}{HF.patch}.weight' not in state:
      continue
    if any(k.startswith(f'{prefix}layers.') for k in keys):
      return HF_VIT_V5.with_prefix(prefix)
    if (prefix == 'vit.' or any('.attention.attention.query.' in k
                                for k in keys)):
      return HF_VIT.with_prefix(prefix)
    return HF.with_prefix(prefix)
  raise VidjaxError(
      f'{checkpoint.where} is not a TimeSformer or ViT checkpoint: want the '
      'keys of a Hugging Face TimeSformer '
      '(timesformer.embeddings.patch_embeddings.projection.weight), the '
      'official one (model_state: model.patch_embed.proj.weight), a timm ViT '
      '(patch_embed.proj.weight) or a Hugging Face ViT '
      f'(vit.embeddings.patch_embeddings.projection.weight); got {len(keys)} '
      f'tensors starting {_first_keys(state)}')


def _fuse_qkv(state: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
  """HF ViT's separate q, k, v → one fused [3D, D] tensor per block.

  The fused key, `...{query,key,value}.weight`, stands for the three; when
  one of them is absent the others stay (unused) and the fused one is
  reported missing.
  """
  if not layout.qkv_parts:
    return dict(state)
  state = dict(state)
  pattern = layout.block_index()
  blocks = {m.group(0) for k in state if (m := pattern.match(k))}
  fused_module = layout.modules['attn/qkv']
  for base in sorted(blocks):
    for suffix in ('weight', 'bias'):
      parts = [f'{base}{p}.{suffix}' for p in layout.qkv_parts]
      if all(p in state for p in parts):
        arrays = [mapping.to_numpy(state.pop(p)) for p in parts]
        state[f'{base}{fused_module}.{suffix}'] = np.concatenate(arrays, 0)
  return state


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
                      f'(first keys: {_first_keys(state)})')
  return tuple(int(n) for n in state[key].shape)


def read_structure(checkpoint: Checkpoint, layout: Layout,
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


def _check_config(checkpoint: Checkpoint, layout: Layout,
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


# -----------------------------------------------------------------------------
# The model to fill.
# -----------------------------------------------------------------------------


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


def _check_overrides(overrides: Mapping[str, Any]):
  unknown = sorted(set(overrides) - set(OPTIONS))
  if unknown:
    raise VidjaxError(
        f'unknown TimeSformer conversion option(s) {", ".join(unknown)}; '
        f'known: {", ".join(OPTIONS)}')


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


def _build_model(name: str, structure: Structure, overrides,
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


# -----------------------------------------------------------------------------
# Rules.
# -----------------------------------------------------------------------------


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


def _initialise(fresh: set[mapping.Path], targets, seed: int):
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
  _check_overrides(overrides)
  checkpoint = read_source(source)
  layout = detect_layout(checkpoint)
  state = _fuse_qkv(checkpoint.state, layout)
  structure = read_structure(checkpoint, layout, state)
  where = checkpoint.where
  model, fresh_head = _build_model(name, structure, overrides, where)
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
  filled.update(_initialise(fresh, targets, overrides.get('seed', 0)))
  return model, mapping.unflatten(filled)
