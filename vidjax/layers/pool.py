"""Max-pooling over NTHWC video with a gradient that XLA:CPU runs fast.

Why not `nn.max_pool` (`lax.reduce_window`)? Its forward is fine, but its
gradient is `select_and_scatter`, which XLA:CPU runs very slowly: in S3D's
training step the pools' backward took longer than all of its convolutions
together (benchmarks/README.md). Autodiff through a max of shifted slices is
no better: XLA fuses the chain of maxima into every consumer of the
gradient and recomputes it there.

So a pool runs as one 1-D pool per axis (W, then H, then T: a max over a box
is the max of maxima over its rows), each with a custom VJP. The forward
takes the maximum over the window's taps (slices of the padded input) and
records which tap won, as an int8 per output. The backward routes each
output's gradient to the input its winning tap read: a sum over taps of the
gradient, masked by `winner == tap` and placed by a strided pad, which XLA
fuses into one pass. Separable, a 3×3×3 pool does 3 + 3 + 3 comparisons and
three 3-term backward sums instead of 27 of each; that made S3D's training
step 13% faster (benchmarks/README.md).

Values equal `nn.max_pool`'s, and so do gradients: the first maximum of a
window in (t, h, w) scan order wins and takes the whole gradient, which is
also what `reduce_window`'s gradient does (tested, ties included). Pooling W
first, then H, then T keeps that order: the T pass picks the first frame
holding the maximum, the H pass before it the first row of that frame, the W
pass the first column of that row.
"""
from collections.abc import Sequence
import functools
import itertools

import jax
import jax.numpy as jnp


def _taps(x, window, strides, padding):
  """(offset, strided slice) per window tap of -inf padded NTHWC `x`."""
  # -inf, as every framework pads max-pools: padding never wins a window.
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  out = [(n - k) // s + 1 for n, k, s in zip(x.shape[1:-1], window, strides)]
  if min(out) < 1:
    raise ValueError(f'max-pool window {tuple(window)} is larger than the '
                     f'padded input {x.shape[1:-1]}')
  for offset in itertools.product(*map(range, window)):
    start = (0, *offset, 0)
    limit = (x.shape[0],
             *(o + s * (n - 1) + 1 for o, s, n in zip(offset, strides, out)),
             x.shape[-1])
    yield offset, jax.lax.slice(x, start, limit, (1, *strides, 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, strides, padding):
  return _max_pool_fwd(x, window, strides, padding)[0]


def _dense_pool(x, window, padding):
  """Stride-1 pool of `x` and, per output, the index of its winning tap."""
  offsets = list(itertools.product(*map(range, window)))
  winner_dtype = jnp.int8 if len(offsets) <= 127 else jnp.int32
  y = winner = None
  for i, (_, tap) in enumerate(_taps(x, window, (1,) * len(window), padding)):
    if y is None:
      y, winner = tap, jnp.zeros(tap.shape, winner_dtype)
      continue
    # Strictly greater: the first maximum wins, as in reduce_window's VJP.
    better = tap > y
    y = jnp.where(better, tap, y)
    winner = jnp.where(better, jnp.asarray(i, winner_dtype), winner)
  return y, winner


def _subsample(y, strides):
  return y[(slice(None), *(slice(None, None, s) for s in strides))]


def _max_pool_fwd(x, window, strides, padding):
  # A strided pool is the stride-1 pool, subsampled. Keeping the dense
  # winners costs a little elementwise work and lets one gather-form
  # backward serve every stride.
  y, winner = _dense_pool(x, window, padding)
  return _subsample(y, strides), winner


def _max_pool_bwd(window, strides, padding, winner, g):
  # Back to the dense output grid: zeros between the strided outputs.
  config = [(0, 0, 0)]
  for s, n_dense, n in zip(strides, winner.shape[1:-1], g.shape[1:-1]):
    config.append((0, n_dense - (s * (n - 1) + 1), s - 1))
  config.append((0, 0, 0))
  zero = jnp.zeros((), g.dtype)
  g = jax.lax.pad(g, zero, config)
  # Gather form: input i receives the gradient of every dense output
  # j = i + pad_lo - offset whose winning tap is that offset. Reading
  # shifted slices (rather than scattering with pads, the transpose form)
  # lets XLA fuse the whole sum into one pass over the input.
  edges = [(k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(window, padding)]
  g = jnp.pad(g, ((0, 0), *edges, (0, 0)))
  winner = jnp.pad(winner, ((0, 0), *edges, (0, 0)), constant_values=-1)
  sizes = [n - (k - 1) for n, k in zip(g.shape[1:-1], window)]
  dx = None
  for i, offset in enumerate(itertools.product(*map(range, window))):
    index = (slice(None), *(slice(k - 1 - o, k - 1 - o + n)
                            for k, o, n in zip(window, offset, sizes)))
    part = jnp.where(winner[index] == i, g[index], zero)
    dx = part if dx is None else dx + part
  return (dx,)


_max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Max over (T, H, W) windows of NTHWC `x`, with explicit per-axis padding.

  Equals `flax.linen.max_pool(x, window, strides, padding)`, gradient
  included (tested).
  """
  if not len(window) == len(strides) == len(padding) == x.ndim - 2:
    raise ValueError(f'need one window, stride and padding per spatial axis '
                     f'of a {x.ndim}-D input, got {window}, {strides}, '
                     f'{padding}')
  ndim = len(window)
  # Last spatial axis first: see the module doc for why the order matters.
  for axis in reversed(range(ndim)):
    pads = tuple(tuple(p) for p in padding)
    if window[axis] == 1 and strides[axis] == 1 and pads[axis] == (0, 0):
      continue
    one = lambda value, default, a=axis: tuple(  # noqa: E731
        value if i == a else default for i in range(ndim))
    x = _max_pool(x, one(window[axis], 1), one(strides[axis], 1),
                  one(pads[axis], (0, 0)))
  return x
