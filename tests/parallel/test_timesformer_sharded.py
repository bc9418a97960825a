"""TimeSformer sequence-sharded: a (data, time) = (2, 4) train step on 8
devices equals the single-device step, and the compiled HLO moves the
temporal step's split with all-to-alls.

Tiny width (D 16, depth 2, 2 heads, patch 8, 8 frames of 32², 4 clips, no
drop-path, float32), divided and joint attention. Two train steps (the
first has learning rate 0) and an eval step, from the same initial state,
in which every zero-initialised `temporal_fc` and the time embedding are
made random: with them at zero the temporal attention would not reach the
loss at the first step, and a wrong split of it could hide.

Unlike S3D-G (tests/parallel/test_sharded_step.py) there is no batch norm
to amplify rounding, so every leaf of the state (parameters and momentum)
must agree to 1e-5 relative (L2 norm of the difference over the norm of
the leaf), the losses and log-probabilities to 1e-5.
"""
import jax
import ml_collections
import numpy as np
import optax
import pytest

from configs import demo
from tests.parallel.test_sharded_step import (
    assert_arrays_close, assert_trees_close, collectives, relative_errors)
from vidjax.parallel import comparison
from vidjax.parallel import mesh as mesh_lib
from vidjax.tools.aot import collectives as hlo_collectives
from vidjax.train import setup as setup_lib

NUM_CLASSES = 13
BATCH, FRAMES, SIZE = 4, 8, 32
TINY = dict(embed_dim=16, depth=2, num_heads=2, patch_size=8,
            image_size=SIZE, num_frames=FRAMES, drop_path_rate=0.0)
SCHEMES = ('divided_space_time', 'joint_space_time')
# The patch tokens one device holds: [N/2, T/4, S, D] float32.
LOCAL_PATCH_BYTES = (BATCH // 2) * (FRAMES // 4) * (SIZE // 8) ** 2 * 16 * 4


def tiny_config(scheme, data=1, time=1):
  config = demo.get_config()
  config.model_name = 'timesformer'
  config.model = ml_collections.ConfigDict(dict(scheme=scheme, **TINY))
  config.data.num_frames = FRAMES
  config.data.crop_size = SIZE
  config.batch_size = BATCH
  config.total_steps = 10
  config.optimizer.warmup_steps = 2
  config.mesh = {'data': data, 'time': time}
  return config


def batch_of(seed):
  rng = np.random.default_rng(seed)
  return {
      'video': rng.normal(size=(BATCH, FRAMES, SIZE, SIZE, 3)).astype(
          np.float32),
      'label': rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32),
      'mask': np.ones(BATCH, np.float32)}


def with_random_zero_params(setup, state):
  """The state with temporal_fc and time_embed random (the same on every
  mesh: drawn on the host from fixed seeds)."""
  state = jax.device_get(state)
  rng = np.random.default_rng(7)
  params = dict(state.params)
  for name, block in params.items():
    if isinstance(block, dict) and 'temporal_fc' in block:
      fc = {k: (0.2 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in block['temporal_fc'].items()}
      params[name] = {**block, 'temporal_fc': fc}
  if 'time_embed' in params:
    params['time_embed'] = (0.5 * rng.standard_normal(
        params['time_embed'].shape)).astype(np.float32)
  return jax.device_put(state.replace(params=params), setup.state_sharding)


def run(scheme, data, time, devices=None):
  """(initial state, final state, [sums], log_probs, optimized HLO)."""
  mesh = mesh_lib.make_mesh({'data': data, 'time': time}, devices=devices)
  setup = setup_lib.build(tiny_config(scheme, data, time), NUM_CLASSES, mesh)
  rng = jax.random.key(0)
  with setup.context():
    compiled = setup.train_step.lower(
        setup.abstract_state, setup.abstract_batch(BATCH),
        jax.ShapeDtypeStruct((), rng.dtype)).compile()
    state = with_random_zero_params(setup, setup.init(rng))
    initial = jax.device_get(state)
    sums = []
    for seed in (1, 2):
      batch = mesh_lib.to_global_batch(batch_of(seed), setup.batch_sharding)
      state, s = compiled(state, batch, rng)
      sums.append(jax.device_get(s))
    video = jax.device_put(batch_of(3)['video'],
                           setup.video_sharding(BATCH))
    log_probs = np.asarray(setup.eval_step(state, video))
  return initial, jax.device_get(state), sums, log_probs, compiled.as_text()


@pytest.fixture(scope='module', params=SCHEMES)
def both(request):
  """The single-device run and the (2, 4) run of one scheme."""
  scheme = request.param
  single = run(scheme, 1, 1, devices=jax.devices()[:1])
  sharded = run(scheme, 2, 4)
  return scheme, single, sharded


def test_sharded_step_equals_single_device(both):
  scheme, single, sharded = both
  initial, expected, expected_sums, expected_log_probs, _ = single
  _, state, sums, log_probs, _ = sharded
  for got, want in zip(sums, expected_sums):
    np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-5)
  assert_trees_close(state, expected)
  assert_arrays_close(log_probs, expected_log_probs)
  # The steps changed the parameters, and a gradient reached the temporal
  # attention: the momentum of a bias (not weight-decayed) is the gradient.
  moved = relative_errors(state.params, initial.params)
  assert moved['head']['kernel'] > 1e-3, moved['head']
  if scheme == 'divided_space_time':
    trace = momentum(state)
    for i in range(TINY['depth']):
      bias = trace[f'blocks_{i}']['temporal_attn']['proj']['bias']
      assert np.linalg.norm(bias) > 1e-3, (i, bias)


def momentum(state):
  """The SGD momentum (optax TraceState.trace) of the state's parameters."""
  is_trace = lambda x: isinstance(x, optax.TraceState)  # noqa: E731
  found = [s.trace for s in jax.tree.leaves(state.opt_state, is_leaf=is_trace)
           if is_trace(s)]
  assert len(found) == 1, [jax.tree.structure(f) for f in found]
  return found[0]


def test_divided_temporal_step_is_an_all_to_all(both):
  scheme, _, sharded = both
  hlo = sharded[-1]
  found = hlo_collectives.parse_collectives(hlo)
  counts = {k: v['count'] for k, v in found.items()}
  assert counts == collectives(hlo)
  if scheme == 'divided_space_time':
    # T split → patch split and back, forward and backward, every block:
    # each one the device's patch tokens, nothing gathered.
    assert counts.get('all-to-all') == 4 * TINY['depth'], counts
    assert found['all-to-all']['bytes'] == (
        4 * TINY['depth'] * LOCAL_PATCH_BYTES), found
    assert 'all-gather' not in counts, counts
    assert 'collective-permute' not in counts, counts
    # The gradient (and the class token's mean over frames) all-reduces.
    assert counts.get('all-reduce', 0) >= 1, counts
  else:
    # Joint attention, left to the partitioner: queries stay split, the
    # keys and values of all 1 + T·S tokens (padded 129 → 132 to divide
    # by 4) are all-gathered in every block, their gradients all-reduced.
    gathers = [line for line in hlo.splitlines()
               if ' all-gather(' in line or ' all-gather-start(' in line]
    assert len(gathers) == 2 * TINY['depth'], counts
    assert all('/attn/' in line for line in gathers), gathers


def test_partitioner_alone_gathers_keys_and_values():
  """What the all-to-all replaces: with it off, the temporal attention
  all-gathers K and V along T (the test above is not vacuous)."""
  with comparison.partitioner_only():
    setup = setup_lib.build(tiny_config('divided_space_time', 2, 4),
                            NUM_CLASSES)
    with setup.context():
      hlo = setup.train_step.lower(
          setup.abstract_state, setup.abstract_batch(BATCH),
          jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
      ).compile().as_text()
  counts = collectives(hlo)
  assert 'all-to-all' not in counts, counts
  gathers = [line for line in hlo.splitlines() if ' all-gather(' in line]
  assert len(gathers) == 2 * TINY['depth'], counts
  assert all('temporal_attn' in line for line in gathers), gathers
