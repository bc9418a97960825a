"""Golden tests: a sharded step equals the single-device step (8 devices).

S3D-G at tiny width on meshes (data, time) = (4, 2), (2, 4), with
global BN statistics: the same loss, optimizer state (momentum = gradient
plus weight decay) and updated parameters and BN statistics after two
steps as on one device, and the same evaluation log-probabilities. The
compiled HLO shows the time split is real: halo collective-permutes, no
all-gather of activations.

How close is "the same"? Losses and log-probabilities agree to 1e-5
relative. Gradients of this tiny network do not: BN over 16 values per
channel at the top stages and ReLUs near zero amplify float32 rounding, so
merely reordering the clips of the batch on ONE device (the same maths,
summed in another order) moves the two-step state by up to ~4e-5 (norm of
the difference over the norm of the leaf). Sharding sums in another order
too. So each leaf must agree to 1e-5, or to within twice the largest
change that reordering the batch makes to any leaf on one device, measured
here in the same run (a per-leaf floor would be one noisy sample).
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import demo
from vidjax import VidjaxError
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import setup as setup_lib

NUM_CLASSES = 13
BATCH = 8
# Both split the batch and the clip's frames. Pure data parallelism, (8, 1),
# is what test_batch_norm_over_groups_of_devices below and the multi-host
# tests train with; each mesh here costs minutes of compilation on 2 cores.
MESHES = ((4, 2), (2, 4))


# Dropout off: its masks follow the batch position, and the rounding floor
# above permutes the batch.
NO_DROPOUT = {'dropout_rate': 0.0}


def tiny_config(data=1, time=1, **overrides):
  config = demo.get_config()
  config.model.depth_multiplier = 0.125
  config.model.min_depth = 8
  config.data.num_frames = 16
  config.data.crop_size = 32
  config.batch_size = BATCH
  config.total_steps = 10
  config.optimizer.warmup_steps = 2
  config.mesh = {'data': data, 'time': time}
  config.update(overrides)
  return config


def batch_of(seed, order=None):
  rng = np.random.default_rng(seed)
  batch = {
      'video': rng.normal(size=(BATCH, 16, 32, 32, 3)).astype(np.float32),
      'label': rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32),
      'mask': np.ones(BATCH, np.float32)}
  return batch if order is None else {k: v[order] for k, v in batch.items()}


def run_two_steps(setup, order=None):
  """Init, two train steps, one eval: (state, [sums], log_probs) on host."""
  rng = jax.random.key(0)
  with setup.context():
    state = setup.init(rng)
    sums = []
    for seed in (1, 2):
      batch = mesh_lib.to_global_batch(batch_of(seed, order),
                                       setup.batch_sharding)
      state, s = setup.train_step(state, batch, rng)
      sums.append(jax.device_get(s))
    video = jax.device_put(batch_of(3)['video'],
                           setup.video_sharding(BATCH))
    log_probs = setup.eval_step(state, video)
  return jax.device_get(state), sums, np.asarray(log_probs)


def relative_errors(actual, expected):
  """Per leaf: |actual - expected| / |expected| in the L2 norm."""
  return jax.tree.map(
      lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b)
                         / max(np.linalg.norm(np.asarray(b, np.float64)),
                               1e-30)), actual, expected)


@pytest.fixture(scope='module')
def single_device():
  """The reference, and the rounding floor of each state leaf."""
  mesh = mesh_lib.make_mesh({'data': 1}, devices=jax.devices()[:1])
  setup = setup_lib.build(tiny_config(), NUM_CLASSES, mesh, **NO_DROPOUT)
  reference = run_two_steps(setup)
  reordered = run_two_steps(setup, order=np.array([3, 1, 7, 0, 5, 2, 6, 4]))
  floor = max(jax.tree.leaves(relative_errors(reordered[0], reference[0])))
  assert floor < 1e-4, floor  # A bug would not hide under a huge floor.
  return reference, floor


def assert_trees_close(actual, expected, floor=0.0):
  limit = max(1e-5, 2 * floor)
  bad = {jax.tree_util.keystr(path): e for path, e in
         jax.tree_util.tree_leaves_with_path(relative_errors(actual, expected))
         if e > limit}
  assert not bad, f'leaves off by more than {limit:.1e}: {bad}'


def assert_arrays_close(a, b):
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def collectives(hlo: str) -> dict[str, int]:
  kinds = re.findall(r'\b(all-gather|all-reduce|collective-permute|'
                     r'all-to-all|reduce-scatter)(?:-start)?\(', hlo)
  return {k: kinds.count(k) for k in set(kinds)}


@pytest.mark.parametrize('data,time', MESHES)
def test_sharded_step_equals_single_device(single_device, data, time):
  setup = setup_lib.build(tiny_config(data, time), NUM_CLASSES, **NO_DROPOUT)
  assert dict(setup.mesh.shape) == {'data': data, 'time': time}
  state, sums, log_probs = run_two_steps(setup)
  (expected_state, expected_sums, expected_log_probs), floor = single_device
  for got, want in zip(sums, expected_sums):
    np.testing.assert_allclose(got['loss'], want['loss'], rtol=1e-5)
  assert_trees_close(state, expected_state, floor)
  assert_arrays_close(log_probs, expected_log_probs)
  # The step changed the parameters (so equality is not of two no-ops).
  assert not np.allclose(state.params['Logits']['kernel'],
                         jax.device_get(jax.jit(setup.init)(
                             jax.random.key(0)).params['Logits']['kernel']))


def test_time_axis_really_splits_the_clip():
  # NO_DROPOUT: the program of the (2, 4) step test, which the compilation
  # cache then serves.
  setup = setup_lib.build(tiny_config(2, 4), NUM_CLASSES, **NO_DROPOUT)
  with setup.context():
    compiled = setup.train_step.lower(
        setup.abstract_state, setup.abstract_batch(BATCH),
        jax.ShapeDtypeStruct((), jax.random.key(0).dtype)).compile()
    hlo = compiled.as_text()
    found = collectives(hlo)
    # Halo frames between time neighbours, forward and backward.
    assert found.get('collective-permute', 0) >= 20, found
    # Nothing gathers whole clips: every activation stays split along T
    # (parameters are replicated, so there is nothing else to gather).
    assert 'all-gather' not in found, found

    # The features themselves: [batch, T, ...] split over data and time
    # where T divides by 4; where it has shrunk below the axis (Mixed_5*,
    # T=2), the time axis moves onto the batch.
    model = setup.model
    state = setup.init(jax.random.key(0))
    video = jax.device_put(batch_of(0)['video'], setup.video_sharding(BATCH))
    _, features = jax.jit(
        lambda s, v: model.apply({'params': s.params,
                                  'batch_stats': s.batch_stats}, v,
                                 return_features=True))(state, video)
  spec = lambda name: tuple(features[name].sharding.spec)  # noqa: E731
  assert features['Conv2d_1a_7x7'].shape[1] == 8
  assert spec('Conv2d_1a_7x7')[:2] == ('data', 'time')
  assert spec('Mixed_3c')[:2] == ('data', 'time')
  assert features['Mixed_4f'].shape[1] == 4
  assert spec('Mixed_4f')[:2] == ('data', 'time')
  assert features['Mixed_5c'].shape[1] == 2
  assert spec('Mixed_5c')[0] == ('data', 'time')
  # Each device holds a quarter of the frames of a half of the clips.
  shard = features['Mixed_3c'].addressable_shards[0].data
  assert shard.shape[:2] == (BATCH // 2, features['Mixed_3c'].shape[1] // 4)


def test_batch_norm_over_groups_of_devices():
  """bn_sync_devices=4 on 8 devices: two groups of four clips, each
  normalised by its own statistics, as if run alone."""
  # No dropout: its keys depend on the batch position, BN's groups do not.
  grouped = setup_lib.build(tiny_config(8, 1, bn_sync_devices=4),
                            NUM_CLASSES, dropout_rate=0.0)
  assert grouped.model.bn_groups == 2
  mesh1 = mesh_lib.make_mesh({'data': 1}, devices=jax.devices()[:1])
  alone = setup_lib.build(tiny_config(), NUM_CLASSES, mesh1, dropout_rate=0.0)
  batch = batch_of(1)
  rng = jax.random.key(0)

  def forward(setup, video):
    with setup.context():
      state = setup.init(rng)
      logits, new_vars = jax.jit(lambda s, v: setup.model.apply(
          {'params': s.params, 'batch_stats': s.batch_stats}, v, train=True,
          mutable=['batch_stats']))(state, video)
    return np.asarray(logits), jax.device_get(new_vars['batch_stats'])

  logits, stats = forward(grouped, jax.device_put(
      batch['video'], grouped.video_sharding(BATCH)))
  parts = [forward(alone, batch['video'][g * 4:(g + 1) * 4])
           for g in range(2)]
  # BN over four clips × 2 frames at the top stages is ill-conditioned, so
  # the tolerance is set by the rounding floor, as in the step tests: each
  # group alone with its clips in reverse order.
  reversed_parts = [forward(alone, batch['video'][g * 4:(g + 1) * 4][::-1])
                    for g in range(2)]
  floor = max(
      max(relative_errors(r[0][::-1], p[0]),
          max(jax.tree.leaves(relative_errors(r[1], p[1]))))
      for r, p in zip(reversed_parts, parts))
  assert floor < 1e-4, floor
  errors = relative_errors(
      {'logits': logits, 'stats': stats},
      {'logits': np.concatenate([p[0] for p in parts]),
       # Running statistics move by the mean of the groups' statistics.
       'stats': jax.tree.map(lambda *s: np.mean(s, axis=0),
                             *[p[1] for p in parts])})
  worst = max(jax.tree.leaves(errors))
  assert worst <= max(1e-5, 2 * floor), (worst, floor)
  # And they differ from global statistics (the groups are not a no-op).
  global_logits, _ = forward(alone, batch['video'])
  assert not np.allclose(logits, global_logits, atol=1e-3)


@pytest.mark.parametrize('mesh,message', [
    ({'data': 3}, 'has 3 devices but there are 8'),
    ({'data': -1, 'time': 3}, 'not divisible by 3'),
    ({'data': 2, 'time': 2}, 'has 4 devices but there are 8'),
    ({'data': -1, 'model': 2}, 'unknown axes'),
])
def test_bad_meshes_are_one_line_errors(mesh, message):
  with pytest.raises(VidjaxError, match=message):
    mesh_lib.make_mesh(mesh)


def test_batch_not_divisible_by_the_data_axis():
  mesh = mesh_lib.make_mesh({'data': -1, 'time': 2})
  with pytest.raises(VidjaxError, match='not divisible by the data axis'):
    mesh_lib.check_batch(6, mesh)


def test_rules_naming_an_unknown_axis():
  config = tiny_config(data=-1, logical_axis_rules=(('batch', 'data'),
                                                    ('time', 'space')))
  with pytest.raises(VidjaxError, match="unknown mesh axis 'space'"):
    setup_lib.build(config, NUM_CLASSES)
  config = tiny_config(data=-1, logical_axis_rules=(('frames', 'time'),))
  with pytest.raises(VidjaxError, match="unknown logical axis 'frames'"):
    setup_lib.build(config, NUM_CLASSES)
