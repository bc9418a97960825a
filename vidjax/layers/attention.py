"""Self-attention layers for video transformers (TimeSformer, Bertasius et al.,
"Is Space-Time Attention All You Need for Video Understanding?", ICML 2021).

The layers follow the official code (facebookresearch/TimeSformer,
`timesformer/models/vit.py`), which Hugging Face's `TimesformerLayer` ports
faithfully. Submodule names match the official state-dict keys
(`attn.qkv`, `attn.proj`, `temporal_norm1`, `temporal_attn`, `temporal_fc`,
`norm1`, `mlp.fc1`, `mlp.fc2`), so a converter maps them one to one (torch
Linear weights are [out, in]: transpose them into Flax kernels).

Tokens are [B, L, D]. A TimeSformer clip is [B, 1 + S·T, D] with S = H·W
patches per frame, the class token first and the patch tokens ordered
`(h w t)`: space-major, time fastest. The divided layer only needs T: the
`(h w)` pair is never split, so H and W need not be known.
"""

import functools
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.errors import VidjaxError

Dtype = Any
Initializer = Any

# The official ViT `_init_weights`: trunc_normal_(std=.02) kernels, zero biases.
# (torch's trunc_normal_ there cuts at ±2 absolute, i.e. ±100 σ, effectively
# untruncated; Flax's cuts at ±2 σ. Only training from scratch notices.)
default_kernel_init = nn.initializers.truncated_normal(stddev=0.02)
LAYER_NORM_EPSILON = 1e-6


class DropPath(nn.Module):
  """Stochastic depth: zeroes whole rows of the leading axis, timm-style.

  The mask has shape [x.shape[0], 1, …, 1], exactly as timm's `drop_path`,
  so whatever the leading axis is at the call site is what gets dropped. In
  the divided TimeSformer block that is (B·H·W) for the temporal branch and
  (B·T) for the spatial one, i.e. single positions or frames, not whole
  clips; we keep that quirk for parity.

  Attributes:
    rate: the probability of dropping a row. Kept rows are scaled by
      1 / (1 − rate).
  """
  rate: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if not train or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    mask = jax.random.bernoulli(self.make_rng('dropout'), keep, shape)
    return jnp.where(mask, x / jnp.asarray(keep, x.dtype), jnp.zeros_like(x))


class Mlp(nn.Module):
  """The transformer MLP: fc1 → exact (erf) GELU → dropout → fc2 → dropout.

  Flax's `nn.gelu` defaults to the tanh approximation; the official code uses
  torch's `nn.GELU()`, the exact erf form, so we set approximate=False.

  Attributes:
    hidden_dim: width of fc1 (mlp_ratio · D; 3072 for ViT-B).
    out_dim: width of fc2; None keeps the input width.
    dropout_rate: dropout after the activation and after fc2 (official `drop`).
    dtype: the computation dtype (None: inferred from inputs and params).
    param_dtype: the parameter dtype.
    kernel_init: initializer of both kernels.
  """
  hidden_dim: int
  out_dim: int | None = None
  dropout_rate: float = 0.0
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    dense = functools.partial(nn.Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              kernel_init=self.kernel_init)
    x = dense(self.hidden_dim, name='fc1')(x)
    x = nn.gelu(x, approximate=False)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    x = dense(out_dim, name='fc2')(x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=not train)


class MultiHeadSelfAttention(nn.Module):
  """timm/TimeSformer `Attention`: one fused qkv projection, softmax, proj.

  The qkv output features are laid out (3, heads, head_dim), as the official
  `reshape(B, N, 3, num_heads, head_dim)`, so converted weights need no
  permutation. The attention weights [B, heads, L, L] are sown into
  'intermediates' under the name 'attention' (apply with
  `mutable=['intermediates']` to get them, e.g. for attention rollout).

  Attributes:
    num_heads: number of heads; must divide D.
    qkv_bias: whether qkv has a bias (True for every released TimeSformer).
    qk_scale: overrides the logit scale head_dim ** -0.5.
    attention_dropout_rate: dropout on the attention weights (`attn_drop`).
    dropout_rate: dropout after proj (`proj_drop`).
    dtype: the computation dtype (None: inferred from inputs and params).
      Logits and softmax are computed in float32 regardless, since bfloat16
      softmax over hundreds of tokens loses too much precision.
    param_dtype: the parameter dtype.
    kernel_init: initializer of the qkv and proj kernels.
  """
  num_heads: int
  qkv_bias: bool = True
  qk_scale: float | None = None
  attention_dropout_rate: float = 0.0
  dropout_rate: float = 0.0
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise VidjaxError(
          f'width {dim} is not divisible by num_heads={self.num_heads}')
    head_dim = dim // self.num_heads
    scale = self.qk_scale or head_dim ** -0.5

    qkv = nn.Dense(3 * dim, use_bias=self.qkv_bias, dtype=self.dtype,
                   param_dtype=self.param_dtype, kernel_init=self.kernel_init,
                   name='qkv')(x)
    q, k, v = einops.rearrange(
        qkv, 'b l (three h d) -> three b h l d', three=3, h=self.num_heads)
    logits = jnp.einsum('bhqd,bhkd->bhqk', q, k,
                        preferred_element_type=jnp.float32) * scale
    weights = jax.nn.softmax(logits, axis=-1)
    self.sow('intermediates', 'attention', weights)
    weights = nn.Dropout(self.attention_dropout_rate)(
        weights, deterministic=not train).astype(v.dtype)
    out = jnp.einsum('bhqk,bhkd->bhqd', weights, v)
    out = einops.rearrange(out, 'b h l d -> b l (h d)')
    out = nn.Dense(dim, dtype=self.dtype, param_dtype=self.param_dtype,
                   kernel_init=self.kernel_init, name='proj')(out)
    return nn.Dropout(self.dropout_rate)(out, deterministic=not train)


class ResidualSelfAttention(nn.Module):
  """x + drop_path(attn(norm1(x))): the attention half of a plain ViT block.

  This is what the official TimeSformer block does for the 'joint_space_time'
  scheme (on all tokens, [B, 1 + S·T, D]) and for 'space_only' (on each frame
  separately, [B·T, 1 + S, D], the model folding frames into the batch). The
  block's MLP half is built by the model with `Mlp`.

  Attributes: as `DividedSpaceTimeAttention`, without num_frames.
  """
  num_heads: int
  qkv_bias: bool = True
  attention_dropout_rate: float = 0.0
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  layer_norm_epsilon: float = LAYER_NORM_EPSILON
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = nn.LayerNorm(epsilon=self.layer_norm_epsilon, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='norm1')(x)
    y = MultiHeadSelfAttention(
        num_heads=self.num_heads, qkv_bias=self.qkv_bias,
        attention_dropout_rate=self.attention_dropout_rate,
        dropout_rate=self.dropout_rate, dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=self.kernel_init,
        name='attn')(y, train)
    return x + DropPath(self.drop_path_rate)(y, train)


class DividedSpaceTimeAttention(nn.Module):
  """The attention part of a TimeSformer 'divided_space_time' block.

  On tokens x = [cls, patches] of shape [B, 1 + S·T, D], patches in `(s t)`
  order (s = h·W + w), exactly as the official `Block.forward`:

    1. Temporal, over the T tokens of each patch position, class token
       excluded:
         xt = x[:, 1:] + temporal_fc(drop_path(temporal_attn(
                  temporal_norm1(regroup (b s) t))))
       Drop-path comes before temporal_fc, as in the official code, so a
       dropped row still receives temporal_fc's bias. temporal_fc is
       zero-initialised (the official code zeroes it in every block), so a
       fresh layer starts as a purely spatial one; the official ImageNet-ViT
       initialisation also copies attn → temporal_attn and norm1 →
       temporal_norm1.
    2. Spatial, over the S patches of each frame plus the block input's class
       token, copied into every frame:
         r = drop_path(attn(norm1([cls, xt regrouped (b t) s])))
       The T class-token outputs are averaged.
    3. Residuals: out = [x_cls, xt] + [mean_t r_cls, r_patches]. The class
       token's base is the block input; the patches' base is xt.
  The MLP half of the block (norm2, mlp, and its residual) is the model's.

  Attributes:
    num_heads: heads of both attentions.
    num_frames: T; the token count must be 1 + S·T.
    qkv_bias: whether the qkv projections have biases.
    attention_dropout_rate: dropout on attention weights.
    dropout_rate: dropout after each attention's proj.
    drop_path_rate: stochastic depth of both branches (row-wise, see
      `DropPath`).
    layer_norm_epsilon: 1e-6 in TimeSformer.
    dtype: the computation dtype (None: inferred from inputs and params).
    param_dtype: the parameter dtype.
    kernel_init: initializer of the attention kernels.
  """
  num_heads: int
  num_frames: int
  qkv_bias: bool = True
  attention_dropout_rate: float = 0.0
  dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  layer_norm_epsilon: float = LAYER_NORM_EPSILON
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    t = self.num_frames
    if x.ndim != 3 or t < 1 or (x.shape[1] - 1) % t:
      raise VidjaxError(
          f'expected tokens [B, 1 + S*T, D] with T={t}, got shape {x.shape}')
    layer_norm = functools.partial(
        nn.LayerNorm, epsilon=self.layer_norm_epsilon, dtype=self.dtype,
        param_dtype=self.param_dtype)
    attention = functools.partial(
        MultiHeadSelfAttention, num_heads=self.num_heads,
        qkv_bias=self.qkv_bias,
        attention_dropout_rate=self.attention_dropout_rate,
        dropout_rate=self.dropout_rate, dtype=self.dtype,
        param_dtype=self.param_dtype, kernel_init=self.kernel_init)

    cls, patches = x[:, :1], x[:, 1:]

    # Temporal attention: each patch position attends over its T frames.
    xt = einops.rearrange(patches, 'b (s t) d -> (b s) t d', t=t)
    xt = attention(name='temporal_attn')(
        layer_norm(name='temporal_norm1')(xt), train)
    xt = DropPath(self.drop_path_rate)(xt, train)
    xt = einops.rearrange(xt, '(b s) t d -> b (s t) d', b=x.shape[0])
    xt = patches + nn.Dense(
        x.shape[-1], dtype=self.dtype, param_dtype=self.param_dtype,
        kernel_init=nn.initializers.zeros, bias_init=nn.initializers.zeros,
        name='temporal_fc')(xt)

    # Spatial attention: each frame attends over its patches plus the block
    # input's class token, which every frame gets a copy of.
    xs = einops.rearrange(xt, 'b (s t) d -> (b t) s d', t=t)
    xs = jnp.concatenate(
        [jnp.repeat(cls, t, axis=0).astype(xs.dtype), xs], axis=1)
    xs = attention(name='attn')(layer_norm(name='norm1')(xs), train)
    xs = DropPath(self.drop_path_rate)(xs, train)
    # The per-frame class-token outputs collapse back into one by averaging.
    res_cls = einops.reduce(xs[:, :1], '(b t) 1 d -> b 1 d', 'mean', t=t)
    res_patches = einops.rearrange(xs[:, 1:], '(b t) s d -> b (s t) d', t=t)

    return jnp.concatenate([cls + res_cls, xt + res_patches], axis=1)
