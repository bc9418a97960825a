"""Training-mode batch norm + ReLU: a hand-written gradient, or autodiff.

Every conv of the Inception family is followed by BN then ReLU. Autodiff
through `nn.BatchNorm` and `nn.relu` is correct but, on XLA:CPU, writes
several activation-sized tensors per layer that nothing needs: the centred
input `x - mean` (kept for the backward pass), per-channel factors broadcast
to full size, the ReLU's mask, and four or five intermediates of the
backward pass. On a CPU, where writing memory is the scarce resource, those
writes and the fresh pages behind them cost S3D's training step about as much
as the batch-norm arithmetic itself (benchmarks/README.md).

The 'custom' kernel (`bn_relu_custom`, inside vidjax/layers/norm.py's
`BatchNormReLU`) keeps only what the layer has to keep anyway: its input
(the conv's output) and its output (the next conv's input). The backward pass
reads those two and the incoming gradient, reduces twice per channel and
writes the input gradient. Against autodiff, S3D's training step touches a
quarter fewer fresh pages (255k against 340k, 0.35 GB less) and runs 4%
faster (benchmarks/README.md).

The 'plain' kernel (`bn_relu_plain`) is the same forward pass left to
autodiff. Values and gradients of both equal `relu(nn.BatchNorm(...)(x))`
up to float32 rounding (tests/kernels/test_norm.py).
"""
import functools

import jax
import jax.numpy as jnp

from vidjax.kernels import selection


def _moments(x):
  """Batch mean and variance per group and channel, in float32.

  x is [G, N/G, ..., C]; the statistics are [G, 1, ..., 1, C]. nn.BatchNorm's
  default ("fast variance"): E[x²] - E[x]², clipped at 0.
  """
  axes = tuple(range(1, x.ndim - 1))
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean = x.mean(axes, keepdims=True)
  mean_sq = jnp.square(x).mean(axes, keepdims=True)
  return mean, jnp.maximum(0.0, mean_sq - jnp.square(mean))


def normalize(x, mean, var, scale, bias, epsilon, dtype, relu=True):
  """relu((x - mean) · scale / sqrt(var + eps) + bias), or without relu."""
  mul = jax.lax.rsqrt(var + epsilon) * scale
  # x · mul + (bias - mean · mul) rather than nn.BatchNorm's
  # (x - mean) · mul + bias: the backward pass computes x - mean too, and
  # XLA would merge the two and keep an activation-sized x - mean alive from
  # the forward pass to the backward.
  y = x.astype(mul.dtype) * mul + (bias - mean * mul)
  return (jnp.maximum(y, 0) if relu else y).astype(dtype)


def bn_relu_plain(x, scale, bias, epsilon, dtype, relu=True):
  """`bn_relu_custom` left to autodiff: the plain kernel."""
  mean, var = _moments(x)
  return normalize(x, mean, var, scale, bias, epsilon, dtype, relu), mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def bn_relu_custom(x, scale, bias, epsilon, dtype, relu=True):
  """Training-mode BN + ReLU of grouped x [G, N/G, ..., C].

  Statistics are per group, over all axes but the first and the last.
  Returns (y, mean, var), the statistics as [G, 1, ..., 1, C]. They are
  outputs only so that the caller can update running averages; they are not
  differentiable (the caller stops their gradient).
  """
  return _bn_relu_fwd(x, scale, bias, epsilon, dtype, relu)[0]


def _bn_relu_fwd(x, scale, bias, epsilon, dtype, relu=True):
  mean, var = _moments(x)
  y = normalize(x, mean, var, scale, bias, epsilon, dtype, relu)
  inv_std = jax.lax.rsqrt(var + epsilon)
  # Without a ReLU the backward pass needs no output: keep none.
  return (y, mean, var), (x, y if relu else None, scale, mean, inv_std)


def _bn_relu_bwd(epsilon, dtype, relu, residuals, cotangents):
  del epsilon, dtype
  x, y, scale, mean, inv_std = residuals
  g = cotangents[0]
  x_dtype = x.dtype
  axes = tuple(range(1, x.ndim - 1))
  count = x.size // (x.shape[0] * x.shape[-1])
  f32 = inv_std.dtype
  # ReLU's gradient: y > 0 exactly where the pre-activation was > 0, and
  # relu'(0) = 0 as in jax.nn.relu. y >= 0, so the mask is sign(y).
  g = g.astype(f32)
  if relu:
    g = g * jnp.sign(y).astype(f32)
  x = x.astype(f32)
  g_sum = g.sum(axes, keepdims=True)                    # d bias, per group
  # d scale = Σ g · x̂ = (Σ g·x - μ Σ g) / σ. Written without x - μ, the
  # reductions need no per-channel broadcast, which YNNPACK cannot fuse:
  # XLA would otherwise write x - μ out in full for every layer.
  g_dot = ((g * x).sum(axes, keepdims=True) - mean * g_sum) * inv_std
  # d x = scale/σ · (g - mean(g) - x̂ · mean(g · x̂)), with x̂ = (x - μ)/σ.
  k = scale * inv_std
  dx = k * (g - g_sum / count - (x - mean) * (inv_std * g_dot / count))
  per_channel = lambda v: v.reshape(-1, v.shape[-1]).sum(0)  # noqa: E731
  return (dx.astype(x_dtype), per_channel(g_dot).astype(scale.dtype),
          per_channel(g_sum).astype(scale.dtype))


bn_relu_custom.defvjp(_bn_relu_fwd, _bn_relu_bwd)


def bn_relu_train(x, scale, bias, epsilon, dtype, relu=True,
                  kernels: str = 'custom'):
  """Training-mode BN (+ ReLU) of grouped x [G, N/G, ..., C] by `kernels`.

  Returns (y, mean, var) as `bn_relu_custom`; 'custom' has the hand-written
  gradient, 'plain' autodiff's, 'auto' the platform's.
  """
  train_fn = (bn_relu_custom if selection.resolve(kernels) == 'custom'
              else bn_relu_plain)
  return train_fn(x, scale, bias, epsilon, dtype, relu)
