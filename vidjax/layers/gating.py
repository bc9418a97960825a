"""S3D-G's spatio-temporal feature gating."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.layers.conv import default_kernel_init
from vidjax.parallel import rules as rules_lib


class SelfGating(nn.Module):
  """Y = σ(W · mean_THW(X) + b) ⊙ X, channel-wise, on NTHWC input.

  The gate sees the whole clip, so it can re-weight channels by context (the
  paper's motivation). TF-slim's W has no bias; the paper's formula and the
  HowTo100M port have one, hence `use_bias`. W is stored as a [C, C] `gate`
  Dense kernel (TF-slim's 1×1×1 conv `transformer_W`).
  """
  use_bias: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # On a time-sharded mesh this mean is an all-reduce over the time axis.
    context = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
    logits = nn.Dense(x.shape[-1], use_bias=self.use_bias,
                      kernel_init=nn.with_logical_partitioning(
                          default_kernel_init, ('conv_in', 'conv_out')),
                      bias_init=nn.with_logical_partitioning(
                          nn.initializers.zeros, ('conv_out',)),
                      dtype=self.dtype,
                      param_dtype=self.param_dtype, name='gate')(context)
    return rules_lib.constrain(jax.nn.sigmoid(logits).astype(x.dtype) * x,
                               rules_lib.VIDEO)
