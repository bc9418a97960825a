"""Shardings of the train state, derived from its logical names (lm1b).

`jax.eval_shape` of the boxed init gives every parameter, BN statistic and
optimizer leaf its logical axis names (optax's states mirror the parameters'
boxes); the rules turn them into mesh axes. Nothing is hard-coded as
replicated: a leaf is replicated because its rules say so.

FSDP (`config.fsdp`, big_vision's `fsdp` strategy): on top of the rules,
each parameter and optimizer leaf of at least `FSDP_MIN_SIZE` elements
splits its largest dimension that divides by the data axis over 'data'.
XLA then all-gathers a parameter where it is used and reduce-scatters its
gradient, so each device holds 1/data of the state.
"""
from typing import Any

import flax.linen as nn
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from vidjax.parallel import mesh as mesh_lib
from vidjax.parallel import rules as rules_lib

# Small leaves (BN vectors, biases) are not worth the all-gather.
FSDP_MIN_SIZE = 2 ** 14


def _fsdp(shape, spec: P, mesh) -> P:
  data = mesh.shape[mesh_lib.DATA_AXIS]
  entries = list(spec) + [None] * (len(shape) - len(spec))
  used = {a for e in entries if e is not None
          for a in (e if isinstance(e, tuple) else (e,))}
  if (data == 1 or mesh_lib.DATA_AXIS in used
      or int(np.prod(shape)) < FSDP_MIN_SIZE):
    return P(*entries)
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if entries[dim] is None and shape[dim] % data == 0:
      entries[dim] = mesh_lib.DATA_AXIS
      break
  return P(*entries)


def logical_specs(abstract_boxed_state: Any) -> Any:
  """PartitionSpecs of logical names (P() for unnamed leaves)."""
  return nn.get_partition_spec(abstract_boxed_state)


def shardings(abstract_boxed_state: Any, mesh, rules, *,
              fsdp: bool = False) -> Any:
  """NamedShardings of the unboxed state, by the rules (and FSDP)."""
  specs = logical_specs(abstract_boxed_state)
  shapes = nn.unbox(abstract_boxed_state)
  rules = rules_lib.as_rules(rules)

  def one(spec, leaf):
    spec = nn.logical_to_mesh_axes(tuple(spec), rules) if spec else P()
    spec = rules_lib.fit_spec(leaf.shape, spec, dict(mesh.shape),
                             to_batch=False)
    if fsdp:
      spec = _fsdp(leaf.shape, spec, mesh)
    return NamedSharding(mesh, spec)

  return jax.tree.map(one, specs, shapes,
                      is_leaf=lambda x: isinstance(x, P))
