"""Sharded S3D-G on meshes (data, time) = (4, 2), (2, 4): the split is real.

That a sharded step equals the single-device step is tested in float64 by
test_sharded_float64.py: in float32 the gradients of S3D-G flip at tied
max-pool windows under any change of summation order, so a float32
comparison needs a tolerance that could hide a real bug (docs/scale.md,
"Sharded against unsharded in float64"). Here: the compiled HLO shows the
time split is real (halo collective-permutes, no all-gather of
activations), BN over groups of devices, and the one-line mesh errors.
The helpers below are shared with the TSM and TimeSformer sharded tests,
which compare float32 steps of models without max-pool ties.
"""
import re

import jax
import numpy as np
import pytest

from configs import demo
from vidjax import VidjaxError
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import setup as setup_lib

NUM_CLASSES = 13
BATCH = 8


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


def relative_errors(actual, expected):
  """Per leaf: |actual - expected| / |expected| in the L2 norm."""
  return jax.tree.map(
      lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b)
                         / max(np.linalg.norm(np.asarray(b, np.float64)),
                               1e-30)), actual, expected)


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


def test_time_axis_really_splits_the_clip():
  setup = setup_lib.build(tiny_config(2, 4), NUM_CLASSES)
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
