"""Batch norm followed by ReLU, as one layer with nn.BatchNorm's variables.

Every conv of the Inception family is followed by BN then ReLU.
`BatchNormReLU` computes both as one op whose training-mode gradient is a
kernel (vidjax/kernels/norm.py): hand-written ('custom', which writes far
less memory on XLA:CPU) or autodiff ('plain').

Values, gradients and running statistics equal `relu(nn.BatchNorm(...)(x))`
up to float32 rounding (tests/layers/test_norm.py, tests/kernels/
test_norm.py). The variables are nn.BatchNorm's (`scale`, `bias`;
`batch_stats/mean`, `batch_stats/var`), so a checkpoint written with either
loads into the other.
"""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.kernels import norm as norm_kernels

Dtype = Any


class BatchNormReLU(nn.Module):
  """relu(BatchNorm(x)) over the last axis, with nn.BatchNorm's variables.

  Attributes mirror nn.BatchNorm's (there is no bias switch: the layer always
  has a bias, as every BN of this family does), plus:
    groups: the batch splits into this many equal groups of consecutive
      clips, each normalised by its own statistics: on a mesh whose data
      axis holds the batch in order, BN synchronised over groups of devices
      (PySlowFast's NUM_SYNC_DEVICES). 1: statistics of the whole batch.
      The running averages take the mean of the groups' statistics.
    kernels: 'custom', the hand-written gradient (fastest on XLA:CPU);
      'plain', autodiff; 'auto' by the platform. Same values either way.
    relu: False gives BN alone, for the BN before a residual sum (ResNet's
      bn3 and its projection shortcut's BN), with the same two kept tensors.
  """
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  use_scale: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  groups: int = 1
  kernels: str = 'custom'
  relu: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    channels = lambda init: nn.with_logical_partitioning(  # noqa: E731
        init, ('channels',))
    ra_mean = self.variable('batch_stats', 'mean', channels(jnp.zeros),
                            (features,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', channels(jnp.ones),
                           (features,), jnp.float32)
    scale = (self.param('scale', channels(nn.initializers.ones), (features,),
                        self.param_dtype) if self.use_scale
             else jnp.ones((features,), self.param_dtype))
    bias = self.param('bias', channels(nn.initializers.zeros), (features,),
                      self.param_dtype)
    dtype = nn.dtypes.canonicalize_dtype(x, scale, bias, dtype=self.dtype)
    scale = scale.astype(jnp.float32)
    bias = bias.astype(jnp.float32)
    if self.use_running_average:
      return norm_kernels.normalize(x, ra_mean.value, ra_var.value, scale,
                                    bias, self.epsilon, dtype, self.relu)
    if x.shape[0] % self.groups:
      raise ValueError(f'batch of {x.shape[0]} does not split into '
                       f'{self.groups} BN groups')
    grouped = x.reshape(self.groups, x.shape[0] // self.groups, *x.shape[1:])
    y, mean, var = norm_kernels.bn_relu_train(
        grouped, scale, bias, self.epsilon, dtype, self.relu, self.kernels)
    y = y.reshape(x.shape)
    if not self.is_initializing():
      mean, var = jax.lax.stop_gradient((mean, var))
      mean = mean.reshape(-1, features).mean(0)
      var = var.reshape(-1, features).mean(0)
      # Cast back: float64 compute must not turn float32 statistics into
      # float64 ones.
      ra_mean.value = (self.momentum * ra_mean.value + (1 - self.momentum)
                       * mean).astype(ra_mean.value.dtype)
      ra_var.value = (self.momentum * ra_var.value + (1 - self.momentum)
                      * var).astype(ra_var.value.dtype)
    return y
