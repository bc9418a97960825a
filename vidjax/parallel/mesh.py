"""The device mesh: axes 'data' and 'time', in the order of the hardware.

`config.mesh` names the size of each axis, e.g. `{'data': -1, 'time': 2}`
(-1 takes the devices the other axes leave). 'data' splits the batch (and,
with FSDP, the parameters); 'time' splits clips along T (space-time
sharding, vidjax/parallel/halo.py). 'time' is the minor axis: its neighbours
exchange halo frames every temporal conv, so they should be ICI neighbours,
while 'data' only all-reduces gradients once a step and may span slow links.

Device order comes from `jax.make_mesh` (topology-aware on TPU). Across TPU
slices (devices with distinct `slice_index`) the mesh is hybrid, as MaxText
builds it: 'data' is split into slices over DCN, everything else stays
inside a slice on ICI.
"""
from collections.abc import Mapping, Sequence
import math

import jax
from jax.experimental import mesh_utils
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from vidjax import config as config_lib
from vidjax.errors import VidjaxError

DATA_AXIS = 'data'
TIME_AXIS = 'time'
MESH_AXES = (DATA_AXIS, TIME_AXIS)


def mesh_shape(spec: Mapping[str, int] | None,
               num_devices: int) -> tuple[int, ...]:
  """Resolves `{'data': -1, 'time': 2}` to sizes in MESH_AXES order."""
  spec = dict(spec or {DATA_AXIS: -1})
  unknown = sorted(set(spec) - set(MESH_AXES))
  if unknown:
    raise VidjaxError(f'config.mesh names unknown axes {unknown}; the mesh '
                      f'axes are {list(MESH_AXES)}')
  config_lib.check_mesh(spec)
  sizes = [int(spec.get(name, 1)) for name in MESH_AXES]
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise VidjaxError(f'config.mesh {spec} does not fit {num_devices} '
                        f'devices: {num_devices} is not divisible by {known}')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise VidjaxError(
        f'config.mesh {spec} has {math.prod(sizes)} devices but there are '
        f'{num_devices} (use -1 for the axis that takes the rest)')
  return tuple(sizes)


def _num_slices(devices: Sequence[jax.Device]) -> int:
  return len({getattr(d, 'slice_index', 0) for d in devices})


def make_mesh(spec: Mapping[str, int] | None = None,
              devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """The ('data', 'time') mesh over `devices` (default: all of them)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(spec, len(devices))
  # Auto axes: the partitioner propagates shardings from the ones we name
  # (inputs, state, logical constraints on activations).
  axis_types = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  slices = _num_slices(devices)
  if slices > 1:
    data, time = shape
    if data % slices:
      raise VidjaxError(f'the data axis ({data}) must be a multiple of the '
                        f'{slices} TPU slices: only it crosses slices')
    grid = mesh_utils.create_hybrid_device_mesh(
        (data // slices, time), (slices, 1), devices)
    return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)
  if devices == list(jax.devices()[:len(devices)]):
    return jax.make_mesh(shape, MESH_AXES, axis_types=axis_types,
                         devices=devices)
  # Explicit devices (AOT topologies, tests): topology-aware order too.
  grid = mesh_utils.create_device_mesh(shape, devices)
  return jax.sharding.Mesh(grid, MESH_AXES, axis_types=axis_types)


def describe(mesh: jax.sharding.Mesh) -> str:
  return ' × '.join(f'{name} {size}' for name, size in mesh.shape.items())


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split over 'data'; the rest whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch(batch_size: int, mesh, name: str = 'batch_size'):
  data = mesh.shape[DATA_AXIS]
  if batch_size % data:
    raise VidjaxError(f'config.{name}={batch_size} is not divisible by the '
                      f'data axis of the mesh ({data} of {describe(mesh)})')
  if batch_size % jax.process_count():
    raise VidjaxError(f'config.{name}={batch_size} is not divisible by the '
                      f'{jax.process_count()} processes')


def check_frames(num_frames: int, mesh, rules):
  """Clips split along T need T to divide over the mesh axes 'time' maps to.

  Otherwise the partitioner silently replicates the clip over those axes
  and every device computes all of it.
  """
  target = dict(rules).get('time')
  axes = (target,) if isinstance(target, str) else tuple(target or ())
  size = math.prod(mesh.shape[a] for a in axes)
  if num_frames % size:
    raise VidjaxError(
        f'config.data.num_frames={num_frames} is not divisible by the time '
        f'axis of the mesh ({size} of {describe(mesh)}); use a multiple of '
        f'{size} frames or --config.mesh.time=1')


def to_global_batch(local_batch: dict[str, np.ndarray],
                    shardings: dict[str, NamedSharding]) -> dict:
  """Assembles each process's rows of the batch into global jax.Arrays.

  Every process passes its own `batch_size / process_count` rows; the
  global batch is their concatenation in process order.
  """
  out = {}
  for key, value in local_batch.items():
    value = np.asarray(value)
    global_shape = (value.shape[0] * jax.process_count(), *value.shape[1:])
    out[key] = jax.make_array_from_process_local_data(
        shardings[key], value, global_shape)
  return out
