"""The Hugging Face TimeSformer layout (`TimesformerForVideoClassification`).

A model directory (config.json + model.safetensors or pytorch_model.bin,
sharded or not; source.py reads it) or its bare state dict:
timesformer.embeddings.{cls_token, position_embeddings, time_embeddings,
patch_embeddings.projection.*}, timesformer.encoder.layer.{i}.{
layernorm_before, attention.attention.qkv, attention.output.dense,
temporal_layernorm, temporal_attention.attention.qkv,
temporal_attention.output.dense, temporal_dense, layernorm_after,
intermediate.dense, output.dense}.*, timesformer.layernorm.*, classifier.*.
`TimesformerModel`'s keys (without 'timesformer.' and the classifier) also
convert: pass num_classes. A bare state dict does not say its head count:
pass num_heads.
"""
from vidjax.convert.timesformer.layout import Layout

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
