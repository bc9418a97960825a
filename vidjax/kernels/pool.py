"""Max-pooling over NTHWC video: separable with int8 winners, or reduce_window.

'plain' is `nn.max_pool` (`lax.reduce_window`); 'custom' the separable
pool below, with a gradient that XLA:CPU runs fast.

Why not `nn.max_pool` (`lax.reduce_window`)? Its forward is fine, but its
gradient is `select_and_scatter`, which XLA:CPU runs very slowly: in S3D's
training step the pools' backward took longer than all of its convolutions
together (benchmarks/README.md). Autodiff through a max of shifted slices is
no better: XLA fuses the chain of maxima into every consumer of the
gradient and recomputes it there.

So a pool runs as one 1-D pool per axis (W, then H, then T: a max over a box
is the max of maxima over its rows), each with a custom VJP. The forward
takes the maximum over the window's taps (strided slices of the padded input)
and records which tap won, as an int8 per output. The backward routes each
output's gradient to the input its winning tap read, in gather form: every
input sums the masked gradients of the outputs that read it, as shifted
slices, one fused pass; a strided pool's inputs are split by phase (index mod
stride) so that each phase is such a gather and nothing is computed at
positions no output occupies. Separable, a 3×3×3 pool does 3 + 3 + 3
comparisons and three short backward sums instead of 27 of each. S3D's
training step: 13% faster for separability, 4% more for the phase split
(benchmarks/README.md).

Values equal `nn.max_pool`'s, and so do gradients: the first maximum of a
window in (t, h, w) scan order wins and takes the whole gradient, which is
also what `reduce_window`'s gradient does (tested, ties included). Pooling W
first, then H, then T keeps that order: the T pass picks the first frame
holding the maximum, the H pass before it the first row of that frame, the W
pass the first column of that row.
"""
from collections.abc import Sequence
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.kernels import selection


def _along(x, axis, start, stop, step=1):
  index = [slice(None)] * x.ndim
  index[axis] = slice(start, stop, step)
  return x[tuple(index)]


def _pad_along(x, axis, lo, hi, value):
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (lo, hi, 0)
  return jax.lax.pad(x, jnp.asarray(value, x.dtype), config)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3, 4))
def _max_pool_1d(x, axis, window, stride, padding):
  return _max_pool_1d_fwd(x, axis, window, stride, padding)[0]


def _max_pool_1d_fwd(x, axis, window, stride, padding):
  """The pool along `axis` and, per output, the index of its winning tap."""
  lo, hi = padding
  size = x.shape[axis]
  out = (size + lo + hi - window) // stride + 1
  if out < 1:
    raise ValueError(f'max-pool window {window} is larger than the padded '
                     f'input ({size} + {lo} + {hi})')
  # -inf, as every framework pads max-pools: padding never wins a window.
  x_padded = _pad_along(x, axis, lo, hi, -jnp.inf)
  y = winner = None
  for tap in range(window):
    values = _along(x_padded, axis, tap, tap + stride * (out - 1) + 1, stride)
    if y is None:
      y, winner = values, jnp.zeros(values.shape, jnp.int8)
      continue
    # Strictly greater: the first maximum wins, as in reduce_window's VJP.
    better = values > y
    y = jnp.where(better, values, y)
    winner = jnp.where(better, jnp.int8(tap), winner)
  return y, (winner, size)


def _max_pool_1d_bwd(axis, window, stride, padding, residuals, g):
  winner, size = residuals
  lo, _ = padding
  out = g.shape[axis]
  zero = jnp.zeros((), g.dtype)
  # Output o's tap t read input j = o·stride + t - lo. Gather form: each
  # input sums the gradients of the outputs whose winning tap read it, as
  # shifted slices (rather than scattering with pads, the transpose form), so
  # XLA fuses the sum into one pass over the input.
  if stride == 1:
    # Input j is read by output j + lo - t through tap t.
    edge_lo, edge_hi = window - 1 - lo, size - out + lo
    g = _pad_along(g, axis, edge_lo, edge_hi, 0)
    winner = _pad_along(winner, axis, edge_lo, edge_hi, -1)
    dx = None
    for tap in range(window):
      begin = window - 1 - tap
      part = jnp.where(_along(winner, axis, begin, begin + size) == tap,
                       _along(g, axis, begin, begin + size), zero)
      dx = part if dx is None else dx + part
    return (dx,)
  # Strided: split the inputs by phase j mod stride. Inputs of phase p, the
  # m-th being j = m·stride + p, are read through the taps t ≡ p + lo
  # (mod stride), by output o = m + (p + lo - t) / stride. Each phase is a
  # stride-1 gather; interleaving the phases gives dx. Nothing is computed
  # at the stride-1 output positions no output occupies.
  per_phase = -(-size // stride)
  phases = []
  for phase in range(stride):
    acc = None
    for tap in range(window):
      if (tap - phase - lo) % stride:
        continue
      shift = (phase + lo - tap) // stride
      share = jnp.where(winner == tap, g, zero)
      before, after = max(-shift, 0), max(per_phase + shift - out, 0)
      share = _pad_along(share, axis, before, after, 0)
      part = _along(share, axis, shift + before, shift + before + per_phase)
      acc = part if acc is None else acc + part
    if acc is None:   # a phase no tap reads (window < stride)
      shape = list(g.shape)
      shape[axis] = per_phase
      acc = jnp.zeros(shape, g.dtype)
    phases.append(acc)
  dx = jnp.stack(phases, axis=axis + 1)
  shape = list(g.shape)
  shape[axis] = per_phase * stride
  return (_along(dx.reshape(shape), axis, 0, size),)


_max_pool_1d.defvjp(_max_pool_1d_fwd, _max_pool_1d_bwd)


def _separable_max_pool(x, window, strides, padding):
  # Last spatial axis first: see the module doc for why the order matters.
  for axis in reversed(range(len(window))):
    pads = tuple(padding[axis])
    if window[axis] == 1 and strides[axis] == 1 and pads == (0, 0):
      continue
    x = _max_pool_1d(x, axis + 1, window[axis], strides[axis], pads)
  return x


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]],
             kernels: str = 'custom') -> jax.Array:
  """Max over (T, H, W) windows of NTHWC `x`, with explicit per-axis padding.

  'custom': the separable pool (module doc); 'plain': `nn.max_pool`
  (reduce_window); 'auto' by the platform. Values and gradients are equal
  (tested).
  """
  if selection.resolve(kernels) == 'plain':
    return nn.max_pool(x, tuple(window), tuple(strides), padding)
  return _separable_max_pool(x, window, strides, padding)
