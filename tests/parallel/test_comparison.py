"""The comparison switch: scoped, and read when a function is traced.

What it turns off is asserted from compiled HLO elsewhere
(test_timesformer_sharded.py: the all-gathers that replace the all-to-all;
benchmarks/tsm_time_sharding_hlo.py for the halo exchange).
"""
import jax
import jax.numpy as jnp
import pytest

from vidjax.parallel import comparison
from vidjax.parallel import halo
from vidjax.parallel import mesh as mesh_lib
from vidjax.parallel import rules as rules_lib


def test_switch_is_scoped_and_restored_after_an_error():
  assert comparison.explicit_collectives()
  with comparison.partitioner_only():
    assert not comparison.explicit_collectives()
    with comparison.partitioner_only(False):
      assert comparison.explicit_collectives()
    assert not comparison.explicit_collectives()
  assert comparison.explicit_collectives()
  with pytest.raises(RuntimeError):
    with comparison.partitioner_only():
      raise RuntimeError('inside')
  assert comparison.explicit_collectives()


def _time_mesh():
  return mesh_lib.make_mesh({'data': 2, 'time': 4})


def test_halo_plan_is_off_inside_the_switch():
  # 8 frames over 4 time shards, a 3-frame window, stride 1, padding 1:
  # one halo frame each side.
  with rules_lib.mesh_and_rules(_time_mesh(), rules_lib.DEFAULT_RULES):
    assert halo.plan(8, 3, 1, (1, 1)) == ('time', 1, 1)
    with comparison.partitioner_only():
      assert halo.plan(8, 3, 1, (1, 1)) is None


def test_a_cached_trace_keeps_what_it_traced():
  """Why the benchmarks build a fresh step inside the switch: jax.jit does
  not key its cache on it, so a function traced outside keeps its halo."""
  traces = []

  @jax.jit
  def plan_at_trace(x):
    traces.append(halo.plan(8, 3, 1, (1, 1)))
    return x + 1

  with rules_lib.mesh_and_rules(_time_mesh(), rules_lib.DEFAULT_RULES):
    plan_at_trace(jnp.zeros(()))
    with comparison.partitioner_only():
      plan_at_trace(jnp.zeros(()))  # Cached: not traced again.
  assert traces == [('time', 1, 1)]
