"""The official TimeSformer layout (facebookresearch/TimeSformer).

Its `.pyth` is PySlowFast's checkpoint, {'model_state': {...}, 'epoch',
'optimizer_state', 'cfg', ...}, with every key under 'model.':
model.cls_token, model.pos_embed, model.time_embed, model.patch_embed.proj.*,
model.blocks.{i}.{norm1, attn.qkv, attn.proj, temporal_norm1,
temporal_attn.qkv, temporal_attn.proj, temporal_fc, norm2, mlp.fc1,
mlp.fc2}.*, model.norm.*, model.head.*. The module names are vidjax's own
(vidjax's TimeSformer follows the official code). The head count is not
in the tensors, and the official code builds only ViT-B: 12 heads.
"""
from vidjax.convert.timesformer.layout import BLOCK_MODULES
from vidjax.convert.timesformer.layout import Layout

WRAPPER = 'model_state'  # PySlowFast's key of the model's state dict.
PREFIX = 'model.'

OFFICIAL = Layout('official TimeSformer', 'cls_token', 'pos_embed',
                  'time_embed', 'patch_embed.proj', 'blocks.{i}.',
                  {m: m.replace('/', '.') for m in BLOCK_MODULES}, 'norm',
                  'head', standard_heads=True)
