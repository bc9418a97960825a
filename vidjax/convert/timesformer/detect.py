"""Which of the four source layouts a checkpoint is in, from its keys.

The official and the timm layouts share module names, so the order of the
tests matters: an official checkpoint is recognised by its 'model.' prefix,
its {'model_state'} wrapper or its time embedding and temporal attention
before a bare ViT is assumed.
"""
from typing import Any, Mapping

from vidjax.convert.timesformer import official
from vidjax.convert.timesformer.hf_timesformer import HF
from vidjax.convert.timesformer.hf_vit import HF_VIT
from vidjax.convert.timesformer.hf_vit import HF_VIT_V5
from vidjax.convert.timesformer.layout import Layout
from vidjax.convert.timesformer.source import CONFIG_FILE
from vidjax.convert.timesformer.source import SourceCheckpoint
from vidjax.convert.timesformer.timm_vit import TIMM_VIT
from vidjax.errors import VidjaxError


def first_keys(state: Mapping[str, Any], count: int = 5) -> str:
  return ', '.join(list(state)[:count]) or 'none'


def detect_layout(checkpoint: SourceCheckpoint) -> Layout:
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
  if all(k.startswith(official.PREFIX) for k in keys):
    return official.OFFICIAL.with_prefix(official.PREFIX, head=True)
  if checkpoint.wrapped or 'time_embed' in state or any(
      '.temporal_attn.' in k for k in keys):
    return official.OFFICIAL
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
      f'tensors starting {first_keys(state)}')
