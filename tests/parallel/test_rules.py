"""Rules → shardings, by hand (golden sharding tests, as MaxText's)."""
import flax
import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import pytest

from tests.parallel.test_sharded_step import NUM_CLASSES, tiny_config
from vidjax.parallel import rules
from vidjax.parallel import state as state_lib
from vidjax.train import setup as setup_lib

MESH = {'data': 2, 'time': 4}


@pytest.mark.parametrize('shape,spec,expected', [
    ((8, 16, 4, 4, 3), P('data', 'time'), P('data', 'time')),
    # T = 2 < 4 shards: 'time' moves onto the batch, which divides by 8.
    ((8, 2, 1, 1, 3), P('data', 'time'), P(('data', 'time'), None)),
    # The batch cannot take it either: 'time' replicates.
    ((2, 2, 1, 1, 3), P('data', 'time'), P('data', None)),
    ((3, 8), P('data', 'time'), P(None, 'time')),
])
def test_fit_spec(shape, spec, expected):
  full = lambda p: tuple(p) + (None,) * (len(shape) - len(p))  # noqa: E731
  assert full(rules.fit_spec(shape, spec, MESH)) == full(expected)


def flat_specs(config):
  setup = setup_lib.build(config, NUM_CLASSES)
  return {jax.tree_util.keystr(path, simple=True, separator='/'): s.spec
          for path, s in jax.tree_util.tree_leaves_with_path(
              setup.state_sharding)}, setup


def test_default_rules_replicate_the_state_and_split_the_batch():
  specs, setup = flat_specs(tiny_config(2, 4))
  assert all(spec == P() or all(e is None for e in spec)
             for spec in specs.values()), specs
  assert tuple(setup.batch_sharding['video'].spec)[:2] == ('data', 'time')
  assert set(tuple(setup.batch_sharding['video'].spec)[2:]) == {None}
  assert tuple(setup.batch_sharding['label'].spec) == ('data',)


def test_rules_move_named_parameter_axes():
  config = tiny_config(2, 4, logical_axis_rules=tuple(
      (name, 'data' if name == 'conv_out' else axis)
      for name, axis in rules.DEFAULT_RULES))
  specs, _ = flat_specs(config)
  kernel = 'params/Mixed_3b/Branch_1/Conv2d_0b_3x3/conv/kernel'
  assert tuple(specs[kernel]) == (None, None, None, None, 'data')
  # The momentum of that kernel follows it (optax mirrors the boxes).
  momentum = [k for k in specs if k.startswith('opt_state')
              and k.endswith('Mixed_3b/Branch_1/Conv2d_0b_3x3/conv/kernel')]
  assert momentum and all(tuple(specs[k]) == tuple(specs[kernel])
                          for k in momentum)
  # BN vectors are 'channels', still whole.
  bn = 'params/Mixed_3b/Branch_1/Conv2d_0b_3x3/bn/bias'
  assert all(e is None for e in specs[bn])


def test_fsdp_shards_large_leaves_over_data():
  config = tiny_config(2, 4, fsdp=True)
  config.model.depth_multiplier = 1.0  # Leaves large enough to shard.
  config.data.crop_size = 32
  setup = setup_lib.build(config, NUM_CLASSES)
  flat = flax.traverse_util.flatten_dict(setup.state_sharding.params)
  shapes = flax.traverse_util.flatten_dict(setup.abstract_state.params)
  sharded = 0
  for path, sharding in flat.items():
    shape = shapes[path].shape
    size = 1
    for n in shape:
      size *= n
    spec = tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))
    if size >= state_lib.FSDP_MIN_SIZE and any(n % 2 == 0 for n in shape):
      dim = spec.index('data')
      # The largest dimension that divides by the data axis.
      assert shape[dim] == max(n for n in shape if n % 2 == 0), (path, spec)
      sharded += 1
    else:
      assert 'data' not in spec, (path, spec)
  assert sharded > 50


def test_mesh_and_rules_sets_both_and_restores_them():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  from vidjax.parallel import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  mesh = mesh_lib.make_mesh(MESH)
  custom = [('batch', 'data'), ('time', None)]
  outside = nn.get_logical_axis_rules()
  with rules.mesh_and_rules(mesh, custom):
    assert jax.sharding.get_abstract_mesh().shape == {'data': 2, 'time': 4}
    assert nn.get_logical_axis_rules() == (('batch', 'data'), ('time', None))
    # A constraint inside resolves through both: 'time' is unsharded here,
    # and split under the default rules.
    assert _constrained_video(mesh).is_equivalent_to(
        NamedSharding(mesh, P('data')), 5)
  with rules.mesh_and_rules(mesh, rules.DEFAULT_RULES):
    assert _constrained_video(mesh).is_equivalent_to(
        NamedSharding(mesh, P('data', 'time')), 5)
  assert nn.get_logical_axis_rules() == outside
  assert jax.sharding.get_abstract_mesh().empty


def _constrained_video(mesh):
  video = jax.device_put(jax.numpy.zeros((8, 4, 1, 1, 3)),
                         NamedSharding(mesh, P()))
  return jax.jit(lambda v: rules.constrain(v, rules.VIDEO))(video).sharding
