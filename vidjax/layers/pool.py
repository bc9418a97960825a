"""Max-pooling over NTHWC video, time-sharded where the mesh splits time.

The pool itself is a kernel (vidjax/kernels/pool.py: separable with int8
winners, or reduce_window); this layer checks its arguments and wires the
halo frames a temporal window needs on a time-sharded mesh.
"""
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from vidjax.kernels import pool as pool_kernels
from vidjax.parallel import halo


def max_pool(x: jax.Array, window: Sequence[int], strides: Sequence[int],
             padding: Sequence[tuple[int, int]],
             kernels: str = 'custom') -> jax.Array:
  """Max over (T, H, W) windows of NTHWC `x`, with explicit per-axis padding.

  Equals `flax.linen.max_pool(x, window, strides, padding)`, gradient
  included, whichever `kernels` runs it (vidjax.kernels.pool.max_pool). On
  a mesh with a time axis, a pool with a temporal window runs time-sharded
  with halo frames (vidjax/parallel/halo.py).
  """
  if not len(window) == len(strides) == len(padding) == x.ndim - 2:
    raise ValueError(f'need one window, stride and padding per spatial axis '
                     f'of a {x.ndim}-D input, got {window}, {strides}, '
                     f'{padding}')
  padding = [tuple(p) for p in padding]
  if window[0] == 1 and strides[0] == 1 and padding[0] == (0, 0):
    return pool_kernels.max_pool(x, window, strides, padding, kernels)

  def op(x, padding):
    return pool_kernels.max_pool(x, window, strides, [padding, *pads_hw],
                                 kernels)

  pads_hw = padding[1:]
  return halo.temporal_window(op, x, window=window[0], stride=strides[0],
                              padding=padding[0], pad_value=-jnp.inf)
