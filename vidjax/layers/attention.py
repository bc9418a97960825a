"""Self-attention layers for video transformers (TimeSformer, Bertasius et al.,
"Is Space-Time Attention All You Need for Video Understanding?", ICML 2021).

The layers follow the official code (facebookresearch/TimeSformer,
`timesformer/models/vit.py`), which Hugging Face's `TimesformerLayer` ports
faithfully. Submodule names match the official state-dict keys
(`attn.qkv`, `attn.proj`, `temporal_norm1`, `temporal_attn`, `temporal_fc`,
`norm1`, `mlp.fc1`, `mlp.fc2`), so a converter maps them one to one (torch
Linear weights are [out, in]: transpose them into Flax kernels).

Tokens are [..., L, D]: any leading axes are batch axes, so a grouped
attention step (every patch position over its frames, every frame over its
patches) calls the layer on its groups directly. The blocks and their
attention schemes are in vidjax/models/timesformer.py.
"""

import functools
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.kernels import matmul as matmul_kernels


Dtype = Any
Initializer = Any

# The official ViT `_init_weights`: trunc_normal_(std=.02) kernels, zero biases.
# (torch's trunc_normal_ there cuts at ±2 absolute, i.e. ±100 σ, effectively
# untruncated; Flax's cuts at ±2 σ. Only training from scratch notices.)
default_kernel_init = nn.initializers.truncated_normal(stddev=0.02)
LAYER_NORM_EPSILON = 1e-6


# pylint: disable-next=invalid-name
def Dense(*args, kernels: str = 'custom', **kwargs) -> nn.Dense:
  """Every Dense of the transformer: an nn.Dense whose `dot_general` is
  the `kernels` set's (vidjax/kernels/matmul.py). With 'custom', in
  bfloat16 on a CPU, products accumulate in float32 on the AMX/YNNPACK
  path; otherwise, and with 'plain', it is nn.Dense."""
  return nn.Dense(*args, dot_general=matmul_kernels.dot_general(kernels),
                  **kwargs)


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


def dense_on_rows(layer: nn.Module, x: jax.Array) -> jax.Array:
  """`layer` (a Dense) on x [..., D], as one [rows, D] matmul on one device.

  The same values; the gradient is what changes. On [A, B, L, D] autodiff's
  weight gradient contracts A, B and L, which XLA:CPU lowers through a
  transposed copy of the activation; on [A·B·L, D] it is one matmul with a
  transposed operand, which the dot library reads in place. TimeSformer-B's
  training step on one CPU: copy fusions 1.23 -> 0.50 s of op time, the step
  6.13 -> 5.49 s (benchmarks/README.md). Sharded, the leading axes stay:
  with them merged, the partitioner all-gathers the time-sharded sequences
  in the backward pass (tests/parallel/test_timesformer_sharded.py sees it).
  """
  if jax.sharding.get_abstract_mesh().size > 1:  # 0 with no mesh set.
    return layer(x)
  y = layer(x.reshape(-1, x.shape[-1]))
  return y.reshape(*x.shape[:-1], y.shape[-1])


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
    kernels: the kernel set of its products ('custom', 'plain', 'auto').
  """
  hidden_dim: int
  out_dim: int | None = None
  dropout_rate: float = 0.0
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  kernels: str = 'custom'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    dense = functools.partial(Dense, dtype=self.dtype,
                              param_dtype=self.param_dtype,
                              kernel_init=self.kernel_init,
                              kernels=self.kernels)
    x = dense_on_rows(dense(self.hidden_dim, name='fc1'), x)
    x = nn.gelu(x, approximate=False)
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    x = dense_on_rows(dense(out_dim, name='fc2'), x)
    return nn.Dropout(self.dropout_rate)(x, deterministic=not train)


class MultiHeadSelfAttention(nn.Module):
  """timm/TimeSformer `Attention`: one fused qkv projection, softmax, proj.

  The qkv output features are laid out (3, heads, head_dim), as the official
  `reshape(B, N, 3, num_heads, head_dim)`, so converted weights need no
  permutation. The attention itself is `jax.nn.dot_product_attention`, so
  the platform's fused kernel runs where there is one (cuDNN on GPU; XLA
  fuses it on TPU) and the [L, L] weights are never materialised for the
  caller. With `sow_weights` they are computed explicitly as well and sown
  into 'intermediates' under 'attention' ([..., heads, L, L]; apply with
  `mutable=['intermediates']`), for attention maps and rollout.

  Attributes:
    num_heads: number of heads; must divide D.
    qkv_bias: whether qkv has a bias (True for every released TimeSformer).
    qk_scale: overrides the logit scale head_dim ** -0.5.
    attention_dropout_rate: dropout on the attention weights (`attn_drop`);
      when training with it, the weights are computed explicitly.
    dropout_rate: dropout after proj (`proj_drop`).
    sow_weights: also compute and sow the attention weights.
    dtype: the computation dtype (None: inferred from inputs and params).
      Logits and softmax are computed in float32 regardless, since bfloat16
      softmax over hundreds of tokens loses too much precision.
    param_dtype: the parameter dtype.
    kernel_init: initializer of the qkv and proj kernels.
    kernels: the kernel set of its products ('custom', 'plain', 'auto').
  """
  num_heads: int
  qkv_bias: bool = True
  qk_scale: float | None = None
  attention_dropout_rate: float = 0.0
  dropout_rate: float = 0.0
  sow_weights: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = default_kernel_init
  kernels: str = 'custom'

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               mask: jax.Array | None = None) -> jax.Array:
    """x [..., L, D] → [..., L, D]; `mask` [L, L] (True: may attend)."""
    dim = x.shape[-1]
    if dim % self.num_heads:
      raise ValueError(
          f'width {dim} is not divisible by num_heads={self.num_heads}')
    head_dim = dim // self.num_heads
    scale = self.qk_scale or head_dim ** -0.5
    lead, length = x.shape[:-2], x.shape[-2]

    qkv = Dense(3 * dim, use_bias=self.qkv_bias, dtype=self.dtype,
                param_dtype=self.param_dtype, kernels=self.kernels,
                kernel_init=nn.with_logical_partitioning(
                    self.kernel_init, ('embed', 'heads')),
                bias_init=nn.with_logical_partitioning(
                    nn.initializers.zeros, ('heads',)),
                name='qkv')
    qkv = dense_on_rows(qkv, x.reshape(-1, length, dim))
    q, k, v = einops.rearrange(
        qkv, 'b l (three h d) -> three b l h d', three=3, h=self.num_heads)
    dropout = train and self.attention_dropout_rate > 0
    if self.sow_weights or dropout:
      logits = jnp.einsum('bqhd,bkhd->bhqk', q, k,
                          preferred_element_type=jnp.float32) * scale
      if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
      weights = jax.nn.softmax(logits, axis=-1)
      if self.sow_weights:
        self.sow('intermediates', 'attention',
                 weights.reshape(*lead, *weights.shape[1:]))
      weights = nn.Dropout(self.attention_dropout_rate)(
          weights, deterministic=not train).astype(v.dtype)
      out = jnp.einsum('bhqk,bkhd->bqhd', weights, v)
    else:
      # float32 logits and softmax inside, whatever q's dtype.
      out = jax.nn.dot_product_attention(
          q, k, v, mask=None if mask is None else mask[None, None],
          scale=scale).astype(v.dtype)
    out = einops.rearrange(out, 'b l h d -> b l (h d)')
    proj = Dense(dim, dtype=self.dtype, param_dtype=self.param_dtype,
                 kernels=self.kernels,
                 kernel_init=nn.with_logical_partitioning(
                     self.kernel_init, ('heads', 'embed')),
                 bias_init=nn.with_logical_partitioning(
                     nn.initializers.zeros, ('embed',)),
                 name='proj')
    out = dense_on_rows(proj, out)
    out = nn.Dropout(self.dropout_rate)(out, deterministic=not train)
    return out.reshape(*lead, length, dim)
