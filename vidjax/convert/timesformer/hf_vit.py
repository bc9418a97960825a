"""The Hugging Face ViT layout (`ViTModel`, `ViTForImageClassification`).

A model directory or a state dict ('vit.' prefix and a classifier for the
latter): embeddings.*, encoder.layer.{i}.{layernorm_before,
attention.attention.{query,key,value}, attention.output.dense,
layernorm_after, intermediate.dense, output.dense}.*, layernorm.* — or
transformers 5's in-memory names layers.{i}.{attention.{q,k,v}_proj,
mlp.fc1, mlp.fc2, ...}. query, key and value are concatenated into the
fused qkv (`fuse_qkv`); the pooler (and a mask token) is not part of
TimeSformer and is dropped. As an image model it initialises every scheme
(rules.py).
"""
import dataclasses
from typing import Any, Mapping

import numpy as np

from vidjax.convert import mapping
from vidjax.convert.timesformer.hf_timesformer import HF
from vidjax.convert.timesformer.layout import Layout

_FUSED = '{query,key,value}'

HF_VIT = dataclasses.replace(
    HF, name='Hugging Face ViT', time='', vit=True,
    modules={'norm1': 'layernorm_before',
             'attn/qkv': f'attention.attention.{_FUSED}',
             'attn/proj': 'attention.output.dense',
             'norm2': 'layernorm_after', 'mlp/fc1': 'intermediate.dense',
             'mlp/fc2': 'output.dense'},
    qkv_parts=('attention.attention.query', 'attention.attention.key',
               'attention.attention.value'),
    ignored=(r'pooler\..*', r'embeddings\.mask_token'))
# transformers 5 names ViT modules so in memory (save_pretrained writes the
# names above).
HF_VIT_V5 = dataclasses.replace(
    HF_VIT, block='layers.{i}.',
    modules={'norm1': 'layernorm_before',
             'attn/qkv': 'attention.{q,k,v}_proj',
             'attn/proj': 'attention.o_proj', 'norm2': 'layernorm_after',
             'mlp/fc1': 'mlp.fc1', 'mlp/fc2': 'mlp.fc2'},
    qkv_parts=('attention.q_proj', 'attention.k_proj', 'attention.v_proj'))


def fuse_qkv(state: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
  """HF ViT's separate q, k, v → one fused [3D, D] tensor per block.

  The fused key, `...{query,key,value}.weight`, stands for the three; when
  one of them is absent the others stay (unused) and the fused one is
  reported missing. Layouts without `qkv_parts` pass through.
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
