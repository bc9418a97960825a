"""Temporal windows over time-sharded clips: halo frames by `ppermute`.

With clips split along T over the mesh's time axis, a temporal conv or
max-pool needs, at each shard's edges, the frames its window reads from the
neighbouring shards. `temporal_window` runs such an op under `jax.shard_map`
(manual over the time axis only; the other axes stay with the partitioner):
each shard receives its left halo from the shard before and its right halo
from the shard after (one `collective-permute` each, a few frames), the
clip's own edges get the op's padding value, and the op then runs locally
with no temporal padding.

Why not leave it to the partitioner? It does handle a plain strided conv,
but our CPU lowerings (polyphase strided convs, strided-slice max-pools)
are slices of a sharded axis, for which it gathers whole clips; measured in
docs/scale.md and asserted from the compiled HLO in tests/parallel.

For output t of a window op with kernel k, stride s and padding (lo, hi):
it reads frames s·t - lo ... s·t - lo + k - 1. A shard owning frames
[i·L, (i+1)·L) owns outputs [i·L/s, (i+1)·L/s), so it needs `lo` frames on
the left and `k - s - lo` on the right (a negative count: it drops that many
of its own last frames). This holds when the op's output length is exactly
T/s and every shard's L divides by s; otherwise the op runs unsharded.
"""
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from vidjax.parallel import comparison
from vidjax.parallel import rules as rules_lib


def _extend(x, index, lo, hi, pad_value, axis_name, num_shards):
  """x [N, L, ...] local → [N, lo + L + hi, ...] with neighbours' frames.

  `index` is this shard's position along the axis, as a [1] array: with
  the other mesh axes left to the partitioner, `lax.axis_index` would
  lower to a PartitionId, which SPMD partitioning rejects.
  """
  index = index[0]
  parts = []
  if lo > 0:
    # Shard i's last lo frames become shard i+1's left halo.
    tail = jax.lax.ppermute(x[:, -lo:], axis_name,
                            [(i, i + 1) for i in range(num_shards - 1)])
    parts.append(jnp.where(index == 0, jnp.asarray(pad_value, x.dtype), tail))
  parts.append(x if hi >= 0 else x[:, :x.shape[1] + hi])
  if hi > 0:
    head = jax.lax.ppermute(x[:, :hi], axis_name,
                            [(i + 1, i) for i in range(num_shards - 1)])
    parts.append(jnp.where(index == num_shards - 1,
                           jnp.asarray(pad_value, x.dtype), head))
  return jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def plan(length: int, window: int, stride: int,
         padding: tuple[int, int]) -> tuple[str, int, int] | None:
  """(mesh axis, left halo, right halo) if the op can run time-sharded.

  None inside `comparison.partitioner_only()`: the partitioner alone.
  """
  found = rules_lib.mesh_axis_of('time')
  if found is None or not comparison.explicit_collectives():
    return None
  axis, shards = found
  lo, hi = padding
  out = (length + lo + hi - window) // stride + 1
  local = length // shards if length % shards == 0 else 0
  if not local or local % stride or out * stride != length:
    return None
  left, right = lo, window - stride - lo
  if left > local or right > local:
    return None
  return axis, left, right


def temporal_window(op: Callable[..., jax.Array], x: jax.Array, *operands,
                    window: int, stride: int, padding: tuple[int, int],
                    pad_value: float) -> jax.Array:
  """`op(x, *operands, padding=(lo, hi))` along axis 1, time-sharded if it can.

  `op` must take the temporal padding as its `padding` keyword and treat
  axis 1 as time; `operands` (weights) are replicated over the time axis.
  Without a time-sharded mesh this is just `op(x, ..., padding=padding)`.
  """
  found = plan(x.shape[1], window, stride, tuple(padding))
  if found is None:
    return op(x, *operands, padding=tuple(padding))
  axis, left, right = found
  shards = dict(jax.sharding.get_abstract_mesh().shape)[axis]

  def local(x, index, *operands):
    x = _extend(x, index, left, right, pad_value, axis, shards)
    return op(x, *operands, padding=(0, 0))

  spec = P(None, axis)
  return jax.shard_map(
      local, in_specs=(spec, P(axis)) + (P(),) * len(operands),
      out_specs=spec, axis_names=frozenset({axis}))(
          x, jnp.arange(shards, dtype=jnp.int32), *operands)
