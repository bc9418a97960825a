"""Views of many windows -> the model's outputs, in full batches on a mesh.

`ViewRunner` applies the model to a batch of views as evaluation does
(`vidjax.train.evaluate`: logits, then log-softmax in float32 on the
device), always at one batch shape (the last batch is padded with zero
views), so it compiles once. With several devices the batch is split over
a one-axis mesh ('data'): each device gets batch_size / devices views, the
weights are replicated.

`ViewQueue` packs the views of consecutive windows (of one video or of
many) into those batches, so a folder of short videos keeps the devices as
busy as one long one, and hands each window's outputs back once all its
views have run.
"""
from __future__ import annotations

from collections.abc import Hashable
import dataclasses

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import jax.numpy as jnp
import numpy as np

from vidjax.errors import VidjaxError

AXIS = 'data'


def make_mesh(devices=None) -> jax.sharding.Mesh:
  devices = list(devices or jax.devices())
  # Auto axes: jax.make_mesh's default (Explicit) makes TimeSformer's
  # reshape of a split batch a ShardingTypeError on 2+ devices.
  return jax.make_mesh((len(devices),), (AXIS,), devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,))


def batch_size_for(batch_size: int, mesh) -> int:
  """`batch_size` rounded up to a multiple of the mesh's devices."""
  if batch_size < 1:
    raise VidjaxError(f'--batch_size must be >= 1, got {batch_size}')
  n = mesh.devices.size
  return -(-batch_size // n) * n


def shard_batch(views: np.ndarray, mesh) -> jax.Array:
  """[B, ...] host views -> one global array split over the mesh's devices
  along the batch (B divisible by the device count)."""
  if len(views) % mesh.devices.size:
    raise VidjaxError(f'a batch of {len(views)} views does not split over '
                      f'{mesh.devices.size} devices')
  return jax.device_put(views, NamedSharding(mesh, P(AXIS)))


class ViewRunner:
  """(logits, log_probs) of views, float32 [n, classes] each, on the host."""

  def __init__(self, model, variables, batch_size: int, devices=None):
    self.mesh = make_mesh(devices)
    self.batch_size = batch_size_for(batch_size, self.mesh)
    replicated = NamedSharding(self.mesh, P())
    self._variables = jax.device_put(variables, replicated)

    def step(v, views):
      logits = model.apply(v, views, train=False).astype(jnp.float32)
      return logits, jax.nn.log_softmax(logits)

    self._step = jax.jit(step, out_shardings=replicated)

  def __call__(self, views: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(views)
    if not 0 < n <= self.batch_size:
      raise VidjaxError(f'{n} views for a batch of {self.batch_size}')
    if n < self.batch_size:
      pad = np.zeros((self.batch_size - n, *views.shape[1:]), views.dtype)
      views = np.concatenate([views, pad])
    logits, log_probs = self._step(self._variables,
                                   shard_batch(views, self.mesh))
    return np.asarray(logits)[:n], np.asarray(log_probs)[:n]


@dataclasses.dataclass
class _Pending:
  key: Hashable
  views: np.ndarray
  taken: int = 0  # Views already put in a batch.


class ViewQueue:
  """Windows' views in, full batches through `runner`, windows' outputs out.

  `add` and `flush` return the windows finished by the batches they ran:
  [(key, logits [V, C], log_probs [V, C])], in the order they were added.
  """

  def __init__(self, runner):
    self._runner = runner
    self._pending: list[_Pending] = []  # Windows with views not yet run.
    self._queued = 0  # Views waiting.
    self._outputs: dict = {}  # key -> ([logits chunks], [log_probs], left)
    self._order: list = []  # Keys in the order added, until returned.

  def add(self, key: Hashable, views: np.ndarray) -> list:
    if key in self._outputs:
      raise VidjaxError(f'window {key!r} added twice')
    self._pending.append(_Pending(key, views))
    self._outputs[key] = ([], [], len(views))
    self._order.append(key)
    self._queued += len(views)
    while self._queued >= self._runner.batch_size:
      self._run(self._runner.batch_size)
    return self._finished()

  def flush(self) -> list:
    """Runs what is left (one padded batch at most, per batch size)."""
    while self._queued:
      self._run(min(self._queued, self._runner.batch_size))
    return self._finished()

  def _run(self, size: int):
    parts, owners = [], []
    while size:
      head = self._pending[0]
      take = min(size, len(head.views) - head.taken)
      parts.append(head.views[head.taken:head.taken + take])
      owners.append((head.key, take))
      head.taken += take
      size -= take
      if head.taken == len(head.views):
        self._pending.pop(0)
    views = np.concatenate(parts) if len(parts) > 1 else parts[0]
    self._queued -= len(views)
    logits, log_probs = self._runner(views)
    start = 0
    for key, take in owners:
      chunks, probs, left = self._outputs[key]
      chunks.append(logits[start:start + take])
      probs.append(log_probs[start:start + take])
      self._outputs[key] = (chunks, probs, left - take)
      start += take

  def _finished(self) -> list:
    done = []
    while self._order and self._outputs[self._order[0]][2] == 0:
      key = self._order.pop(0)
      chunks, probs, _ = self._outputs.pop(key)
      done.append((key, np.concatenate(chunks), np.concatenate(probs)))
    return done
