"""A comparison switch: time-sharded ops left to the partitioner alone.

Where the partitioner's answer for a time-sharded clip is poor, vidjax
places the collectives itself: halo frames by `ppermute` for temporal
windows (parallel/halo.py) and, for TimeSformer's temporal attention, an
all-to-all that swaps the time split for a patch split
(models/timesformer.py). Inside `partitioner_only()` both are off, so a
benchmark or test can compile the same step without them and show what
they replace (benchmarks/*_hlo.py, tests/parallel). Training never enters
it.

The switch is read while a function is traced, as the mesh and the logical
axis rules are, not when it runs; `jax.jit` caches a trace without knowing
of it. So enter the context before the step is first traced and trace a
fresh function inside it (build a new `train.setup.Setup`): a function
traced outside keeps its collectives.
"""
import contextlib
import contextvars

_PARTITIONER_ONLY = contextvars.ContextVar('vidjax_partitioner_only',
                                           default=False)


@contextlib.contextmanager
def partitioner_only(enabled: bool = True):
  """While active (if `enabled`), traces leave time sharding to XLA."""
  token = _PARTITIONER_ONLY.set(enabled)
  try:
    yield
  finally:
    _PARTITIONER_ONLY.reset(token)


def explicit_collectives() -> bool:
  """Whether time-sharded ops place their own collectives (the default).

  Read at trace time; False inside `partitioner_only()`.
  """
  return not _PARTITIONER_ONLY.get()
