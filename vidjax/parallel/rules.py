"""Logical axis names and the rules that put them on mesh axes (Flax lm1b).

Models name what each axis of a parameter or activation *is*; a config's
`logical_axis_rules` says which mesh axis (or none) each name goes to.
Changing the parallelism is a config change, never a model change.

Activation names: batch, time, height, width, channels, tokens, heads, mlp,
embed. Parameter names: kernel_time, kernel_height, kernel_width, conv_in,
conv_out (conv kernels [kt, kh, kw, c_in, c_out]), channels (BN and gating
vectors), classes (classifier outputs), and the transformer's embed, mlp,
heads, head_dim.

`constrain` is the one place an activation's logical names become a
sharding constraint, with one policy for axes too short to split (the
top stages of a video network, where T has shrunk below the time axis):
such a mesh axis moves to the batch dimension when the batch divides over
it, and is otherwise replicated there. Both are logged in the compiled HLO
and tested (tests/parallel).
"""
from collections.abc import Iterator, Sequence
import contextlib
import math

import flax.linen as nn
import jax
from jax.sharding import PartitionSpec as P

from vidjax import config as config_lib
from vidjax.errors import VidjaxError

ACTIVATION_AXES = ('batch', 'time', 'height', 'width', 'channels', 'tokens',
                   'heads', 'mlp', 'embed')
PARAMETER_AXES = ('kernel_time', 'kernel_height', 'kernel_width', 'conv_in',
                  'conv_out', 'classes', 'head_dim')
LOGICAL_AXES = ACTIVATION_AXES + tuple(a for a in PARAMETER_AXES
                                       if a not in ACTIVATION_AXES)

# The default rules table is config data (Flax lm1b keeps it in the config).
DEFAULT_RULES = config_lib.DEFAULT_RULES

VIDEO = ('batch', 'time', 'height', 'width', 'channels')
CONV_KERNEL = ('kernel_time', 'kernel_height', 'kernel_width', 'conv_in',
               'conv_out')


def as_rules(rules) -> tuple[tuple[str, str | tuple[str, ...] | None], ...]:
  """Normalises a config's rules (lists from JSON, tuples) to tuples."""
  out = []
  for rule in rules:
    if len(rule) != 2:
      raise VidjaxError(f'logical_axis_rules entry {rule!r} is not a '
                        '(logical name, mesh axis) pair')
    name, target = rule
    if isinstance(target, (list, tuple)):
      target = tuple(target)
    out.append((name, target))
  return tuple(out)


def validate(rules, mesh_axes: Sequence[str]):
  """Raises VidjaxError for an unknown logical name or mesh axis."""
  for name, target in as_rules(rules):
    if name not in LOGICAL_AXES:
      raise VidjaxError(f'logical_axis_rules names an unknown logical axis '
                        f'{name!r}; known: {", ".join(LOGICAL_AXES)}')
    targets = target if isinstance(target, tuple) else (target,)
    for axis in targets:
      if axis is not None and axis not in mesh_axes:
        raise VidjaxError(f'logical_axis_rules maps {name!r} to an unknown '
                          f'mesh axis {axis!r}; the mesh has '
                          f'{", ".join(mesh_axes)}')


@contextlib.contextmanager
def mesh_and_rules(mesh: jax.sharding.Mesh, rules) -> Iterator[None]:
  """The mesh (`jax.set_mesh`) and logical axis rules under which a step
  traces and runs, so the models' logical constraints resolve on it."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(as_rules(rules)):
    yield


def _mesh_axes(entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def fit_spec(shape: Sequence[int], spec: P, mesh_shape: dict, *,
             to_batch: bool = True) -> P:
  """`spec` with every mesh axis that cannot split its dimension moved.

  A dimension whose size is not a multiple of its mesh axes' product loses
  them. With `to_batch` (activations) they go to dimension 0, the batch, if
  it still divides; otherwise they replicate. Even splits keep the
  partitioner from padding shards.
  """
  entries = [list(_mesh_axes(e)) for e in tuple(spec) + (None,) * (
      len(shape) - len(spec))]
  dropped = []
  for dim, axes in enumerate(entries):
    size = math.prod(mesh_shape[a] for a in axes)
    if axes and shape[dim] % size:
      dropped += axes
      entries[dim] = []
  if dropped and shape and to_batch:
    used = set(a for axes in entries for a in axes)
    for axis in dropped:
      if axis in used:
        continue
      size = math.prod(mesh_shape[a] for a in entries[0]) * mesh_shape[axis]
      if shape[0] % size == 0:
        entries[0].append(axis)
        used.add(axis)
  return P(*[None if not a else a[0] if len(a) == 1 else tuple(a)
             for a in entries])


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Shards activation `x` by its logical `names` under the current rules.

  A no-op outside `jax.set_mesh` + `nn.logical_axis_rules` (single-device
  use, tests of layers), so models can always call it.
  """
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return x
  spec = nn.logical_to_mesh_axes(tuple(names), rules)
  spec = fit_spec(x.shape, spec, dict(mesh.shape))
  return jax.lax.with_sharding_constraint(x, spec)


def mesh_axis_of(name: str) -> tuple[str, int] | None:
  """(mesh axis, size) that logical `name` maps to now, if one of size > 1."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return None
  axes = _mesh_axes(nn.logical_to_mesh_axes((name,), rules)[0])
  if len(axes) != 1 or mesh.shape[axes[0]] == 1:
    return None
  return axes[0], mesh.shape[axes[0]]
