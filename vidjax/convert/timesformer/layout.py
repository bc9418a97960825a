"""`Layout`: how one code base names a TimeSformer's (or a ViT's) tensors.

Each source layout (official.py, timm_vit.py, hf_timesformer.py, hf_vit.py)
is one `Layout`; detect.py tells them apart and rules.py maps any of them
onto vidjax's parameters.
"""
import dataclasses
import re
from typing import Mapping

# vidjax block modules (besides the extra steps' copies) and their tensors.
BLOCK_MODULES = ('norm1', 'attn/qkv', 'attn/proj', 'temporal_norm1',
                 'temporal_attn/qkv', 'temporal_attn/proj', 'temporal_fc',
                 'norm2', 'mlp/fc1', 'mlp/fc2')


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
