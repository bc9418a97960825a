"""TSM-R50 on a (data, time) = (2, 4) mesh of 8 CPU devices.

The tiny TSM-R50 (width 8, 8 frames of 32², batch 4, dropout 0) trains one
step on the mesh as on one device, the time split exchanges only the
shifted channels of the boundary frames (read from the compiled HLO), and
the streaming step shards over the batch of streams with no collectives.

What "the same step" can mean here (measured; docs/scale.md):

* The forward half of the float32 step (loss, top-k counts, BN running
  statistics) agrees to 1e-5 relative.
* The float32 *gradients* of this network do not, and cannot, on any
  layout: one device fed the same batch in another clip order moves some
  updated parameters by up to 8e-3 (relative L2 of the leaf). Two things
  amplify float32 rounding: at a 32² crop layer4 is 1×1, so its BN
  normalises 32 values per channel, and a ReLU input within rounding of
  zero (5e-5 here) flips, which changes that element's gradient by O(1);
  BN then spreads it over its channels. On the mesh one block output flips
  (layer4/block2, clip 3, frame 5: 5.4e-5 on one device, 0 on the mesh),
  which moves the gradients by ~3% and the new parameters by up to 3e-2.
* So the full state is compared with the arithmetic in float64 (the
  model's `dtype`; parameters and optimizer state stay float32): the same
  program, sharding and collectives, without the rounding chaos. Every
  leaf of the new parameters, BN statistics and optimizer state, and every
  metric, agrees to 1e-5 (measured: 6e-8, the float32 rounding of the
  stored state), while dropping the halo exchange moves them by O(1).
"""
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from benchmarks import tsm_time_sharding_hlo as bench
from tests.parallel.test_sharded_step import assert_trees_close
from tests.parallel.test_sharded_step import collectives
from vidjax.models import create_model
from vidjax.models import resnet
from vidjax.parallel import mesh as mesh_lib
from vidjax.parallel import rules as rules_lib
from vidjax.errors import VidjaxError
from vidjax.train import setup as setup_lib

NUM_CLASSES = 13
BATCH, FRAMES, SIZE = 4, 8, 32
DATA, TIME = 2, 4


def config(data=DATA, time=TIME, **kwargs):
  options = dict(frames=FRAMES, size=SIZE, width=8, batch=BATCH)
  options.update(kwargs)
  return bench.tsm_config(data=data, time=time, **options)


def one_device():
  return mesh_lib.make_mesh({'data': 1}, devices=jax.devices()[:1])


@pytest.fixture(scope='module')
def batch():
  rng = np.random.default_rng(1)
  return {
      'video': rng.normal(size=(BATCH, FRAMES, SIZE, SIZE, 3)).astype(
          np.float32),
      'label': rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32),
      'mask': np.ones(BATCH, np.float32)}


@pytest.fixture(scope='module')
def initial_state():
  """One init (float32 state, on the host) shared by every step below."""
  setup = setup_lib.build(config(1, 1), NUM_CLASSES, one_device())
  with setup.context():
    return jax.device_get(setup.init(jax.random.key(0)))


def run_step(setup, step, state, batch):
  """One train step from `state` on setup's mesh: (new state, sums)."""
  with setup.context():
    rng = jax.device_put(jax.random.key(0), mesh_lib.replicated(setup.mesh))
    new, sums = step(jax.device_put(state, setup.state_sharding),
                     mesh_lib.to_global_batch(batch, setup.batch_sharding),
                     rng)
  return jax.device_get(new), jax.device_get(sums)


def assert_sums_close(actual, expected):
  for key in expected:
    np.testing.assert_allclose(actual[key], expected[key], rtol=1e-5,
                               err_msg=key)


@pytest.fixture(scope='module')
def float32_mesh():
  """The float32 step on (2, 4), compiled once: run and read as HLO."""
  setup, compiled = bench.compile_train_step(config(), NUM_CLASSES)
  return setup, compiled, compiled.as_text()


def test_train_step_equals_single_device(initial_state, batch):
  """Float64 arithmetic, float32 state: every leaf and metric to 1e-5."""
  with jax.enable_x64(True):
    reference = setup_lib.build(config(1, 1), NUM_CLASSES, one_device(),
                                dtype=jnp.float64)
    sharded = setup_lib.build(config(), NUM_CLASSES, dtype=jnp.float64)
    assert dict(sharded.mesh.shape) == {'data': DATA, 'time': TIME}
    expected, expected_sums = run_step(reference, reference.train_step,
                                       initial_state, batch)
    state, sums = run_step(sharded, sharded.train_step, initial_state,
                           batch)
  assert expected_sums['lr'] > 0  # The step moves the parameters...
  assert not np.allclose(expected.params['fc']['kernel'],
                         initial_state.params['fc']['kernel'])
  assert_sums_close(sums, expected_sums)
  assert_trees_close(state.params, expected.params)
  assert_trees_close(state.batch_stats, expected.batch_stats)
  assert_trees_close(state.opt_state, expected.opt_state)


def test_float32_step_forward_equals_single_device(initial_state, batch,
                                                   float32_mesh):
  """The float32 step (the program the HLO test reads): what its forward
  pass determines agrees to 1e-5; its gradients cannot (module doc)."""
  setup, compiled, _ = float32_mesh
  reference = setup_lib.build(config(1, 1), NUM_CLASSES, one_device())
  expected, expected_sums = run_step(reference, reference.train_step,
                                     initial_state, batch)
  state, sums = run_step(setup, compiled, initial_state, batch)
  assert_sums_close(sums, expected_sums)
  assert_trees_close(state.batch_stats, expected.batch_stats)


def _time_neighbours(mesh, step):
  """(source, target) partition ids one frame moves to along 'time'."""
  ids = np.arange(mesh.devices.size).reshape(mesh.devices.shape)
  axis = mesh.axis_names.index('time')
  ids = np.moveaxis(ids, axis, -1).reshape(-1, mesh.shape['time'])
  return frozenset((int(row[t]), int(row[t + step])) for row in ids
                   for t in range(len(row)) if 0 <= t + step < len(row))


def _all_reduced_arrays(hlo: str) -> list[tuple[int, ...]]:
  """Result shapes of every all-reduce, size-1 dimensions dropped."""
  out = []
  for line in hlo.splitlines():
    match = re.search(r'=\s*(.*?)\sall-reduce(?:-start)?\(', line)
    if match:
      for dims in re.findall(r'\w+\[([\d,]*)\]', match.group(1)):
        out.append(tuple(int(d) for d in dims.split(',') if d and d != '1'))
  return out


def test_time_split_exchanges_only_shifted_boundary_channels(float32_mesh):
  setup, _, hlo = float32_mesh
  mesh = setup.mesh
  # The device assignment is the mesh's order (partition i = device i).
  assert [d.id for d in mesh.devices.flat] == list(range(8))
  found = collectives(hlo)
  # Nothing gathers whole clips: no mesh axis silently replicates the
  # activations (the S3D test's criterion), and T never moves to the batch.
  assert set(found) == {'all-reduce', 'collective-permute'}, found

  # One permute each way per shifted block forward (the shift's boundary
  # frame to each time neighbour), and its transpose backward: the
  # cotangent of that frame sent back the other way. 2 × 2 × 16 = 64.
  inputs = bench.shift_inputs(setup.model, (BATCH, *setup.clip_shape))
  assert list(inputs) == [f'layer{s + 1}/block{b}'
                          for s, b in resnet.shifted_blocks(50)]
  assert len(inputs) == 16
  permutes = bench.permutes(hlo)
  assert found['collective-permute'] == len(permutes) == 2 * 2 * 16
  right, left = _time_neighbours(mesh, 1), _time_neighbours(mesh, -1)
  for block, shape in inputs.items():
    # One frame's fold = C // 8 channels of the local shard's clips.
    want = bench.halo_shape(setup.model, shape, DATA)
    assert want == (BATCH // DATA, 1, *shape[2:4], shape[4] // 8)
    for backward in (False, True):
      mine = [p for p in permutes
              if p.block == block and p.backward == backward]
      assert len(mine) == 2 and {p.pairs for p in mine} == {right, left}, (
          block, mine)
      assert [p.shape for p in mine] == [want, want], (block, mine)
  assert all(p.block in inputs for p in permutes)
  # e.g. layer1/block1: [4, 8, 8, 8, 32] in, f32[2, 1, 8, 8, 4] moved.
  assert bench.halo_shape(setup.model, inputs['layer1/block1'], DATA) == (
      2, 1, 8, 8, 4)
  total = sum(p.bytes for p in permutes)
  expected = bench.exchange_bytes(setup.model, (BATCH, *setup.clip_shape),
                                  DATA)
  assert total == expected['forward'] + expected['backward'] == 57344

  # All-reduces carry gradients, per-channel BN sums and the logits' mean
  # over time, never activations. (Dimensions compared as multisets: XLA
  # may reduce a gradient transposed, e.g. fc's as [13, 256]; a conv that
  # layers.conv runs as a matmul over its windows reduces its kernel's as
  # the matmul's [kh·kw·C, D].)
  leaves = jax.tree.leaves(setup.abstract_state.params)
  params = {tuple(sorted(d for d in leaf.shape if d != 1)) for leaf in leaves}
  params |= {tuple(sorted((math.prod(leaf.shape[:-1]), leaf.shape[-1])))
             for leaf in leaves if leaf.ndim == 5}
  logits = tuple(sorted((BATCH // DATA, NUM_CLASSES)))
  for dims in map(lambda d: tuple(sorted(d)), _all_reduced_arrays(hlo)):
    assert dims in params or len(dims) <= 1 or dims == logits, dims


def _online_model():
  return create_model('tsm_online_r50', num_classes=NUM_CLASSES, width=8,
                      dropout_rate=0.0)


@pytest.mark.parametrize('mesh_shape,streams', [
    ((8, 1), P('data')),
    # On the training mesh the model's constraints spread the streams over
    # both axes; sharding them over 'data' alone costs 17 all-gathers.
    ((2, 4), P(('data', 'time'))),
])
def test_streaming_step_shards_over_streams(mesh_shape, streams):
  model = _online_model()
  n = 8
  frames = np.random.default_rng(0).normal(size=(2, n, SIZE, SIZE, 3)).astype(
      np.float32)
  variables = jax.jit(model.init)(jax.random.key(0),
                                  jnp.zeros((1, 2, SIZE, SIZE, 3)))
  # Non-trivial running statistics, so the step is not BN(0, 1).
  rng = np.random.default_rng(1)
  variables = {**variables, 'batch_stats': jax.tree.map(
      lambda v: (rng.uniform(0.5, 1.5, v.shape) if np.all(v == 1) else
                 rng.normal(0, 0.1, v.shape)).astype(np.float32),
      jax.device_get(variables['batch_stats']))}
  state0 = resnet.init_stream_state(model, variables, (n, SIZE, SIZE, 3))

  def step(v, frame, state):
    return model.apply(v, frame, state=state)

  expected, state = [], state0
  for frame in frames:
    logits, state = jax.jit(step)(variables, frame, state)
    expected.append(jax.device_get((logits, state)))

  mesh = mesh_lib.make_mesh({'data': mesh_shape[0], 'time': mesh_shape[1]})
  rows, whole = NamedSharding(mesh, streams), mesh_lib.replicated(mesh)
  with rules_lib.mesh_and_rules(mesh, rules_lib.DEFAULT_RULES):
    abstract = lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype,  # noqa: E731
                                              sharding=rows)
    compiled = jax.jit(
        step, in_shardings=(whole, rows, rows),
        out_shardings=(rows, rows)).lower(
            variables, abstract(frames[0]),
            jax.tree.map(abstract, state0)).compile()
    # Each device runs its own streams: nothing crosses devices.
    assert collectives(compiled.as_text()) == {}
    v = jax.device_put(variables, whole)
    state = jax.device_put(state0, rows)
    for frame, (want_logits, want_state) in zip(frames, expected):
      logits, state = compiled(v, jax.device_put(frame, rows), state)
      assert logits.sharding.spec == streams
      assert_trees_close({'logits': jax.device_get(logits),
                          'state': jax.device_get(state)},
                         {'logits': want_logits, 'state': want_state})


def test_clip_not_dividing_the_time_axis_is_one_clear_error():
  # Otherwise the clip is silently replicated over 'time' and computed four
  # times over.
  with pytest.raises(VidjaxError, match=r'num_frames=6 is not divisible by '
                     r'the time axis of the mesh \(4 of'):
    setup_lib.build(config(frames=6), NUM_CLASSES)


def test_exchange_bytes_of_a_real_step():
  """The figure docs/scale.md quotes, from the shapes (no compile)."""
  model = setup_lib.make_model(config(width=64, size=224), 400,
                               jax.make_mesh((DATA, TIME), ('data', 'time')))
  cost = bench.exchange_bytes(model, (8, 8, 224, 224, 3), DATA)
  # Per clip per direction, forward: one frame's C/8 channels at every
  # shifted block = 702,464 floats.
  assert cost['forward'] == 2 * 4 * 702464 * 4
  assert math.isclose(cost['forward'] / 2**20, 21.4375)
