"""The timm ViT layout: an ImageNet ViT, the paper's initialisation.

cls_token, pos_embed, patch_embed.proj.*, blocks.{i}.{norm1, attn.qkv,
attn.proj, norm2, mlp.fc1, mlp.fc2}.*, norm.*, head.*: the official
TimeSformer's layout without 'model.', time_embed and temporal_*. (So an
official space-only state dict unwrapped by hand reads as a ViT; for
`timesformer_space` that is the same conversion.) As an image model it
initialises every scheme (rules.py).
"""
import dataclasses

from vidjax.convert.timesformer.official import OFFICIAL

TIMM_VIT = dataclasses.replace(OFFICIAL, name='timm ViT', vit=True)
