"""The device mesh and the shardings the trainer uses.

The skeleton is data-parallel: the batch axis is split over every device of
every host ('data'), parameters and optimizer state are replicated. Later
issues add a space-time axis and logical-axis rules on top of this mesh.
"""
import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over `num_devices` (default: all) devices, axis 'data'."""
  n = num_devices or jax.device_count()
  # Auto axes: XLA propagates shardings from the inputs we place, which is
  # what a data-parallel step with batch-norm statistics needs.
  return jax.make_mesh((n,), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,),
                       devices=jax.devices()[:n])


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'; the rest whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def to_global_batch(local_batch: dict[str, np.ndarray], mesh) -> dict:
  """Assembles each host's slice of the batch into one global jax.Array."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in local_batch.items()}
