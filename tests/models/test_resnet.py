"""TSN / TSM on ResNet: counts, names, shift placement, streaming, properties.

Checkpoint parity against PyTorch is in tests/convert/test_torch_resnet.py;
the time-sharded step in tests/parallel/test_tsm_sharded.py.
"""
import functools
import re

from absl.testing import parameterized
import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.errors import VidjaxError
from vidjax.models import complexity, create_model, registry, resnet
from vidjax.tools import profile

# Tiny: width 4 (stages 4..32, ×4 in bottlenecks), 32² frames, 4 frames.
TINY = dict(width=4, dropout_rate=0.0)
CLIP = (2, 4, 32, 32, 3)


def _randomise_batch_stats(variables, seed=0):
  """Running statistics away from (0, 1), so BN in eval mode is not identity."""
  rng = np.random.default_rng(seed)
  stats = flax.traverse_util.flatten_dict(variables['batch_stats'])
  for path, value in stats.items():
    if path[-1] == 'mean':
      stats[path] = rng.normal(0, 0.2, value.shape).astype(np.float32)
    else:
      stats[path] = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
  params = flax.traverse_util.flatten_dict(variables['params'])
  for path, value in params.items():
    if path[-1] in ('scale', 'bias') and path[0] != 'fc':
      params[path] = value + rng.normal(0, 0.1, value.shape).astype(np.float32)
  return {'params': flax.traverse_util.unflatten_dict(params),
          'batch_stats': flax.traverse_util.unflatten_dict(stats)}


@functools.cache
def tiny(name, seed=0, **overrides):
  """(model, variables with random BN statistics) at tiny width."""
  model = create_model(name, num_classes=5, **{**TINY, **overrides})
  variables = jax.jit(model.init)(jax.random.key(seed), jnp.zeros(CLIP))
  return model, _randomise_batch_stats(flax.core.unfreeze(
      flax.linen.unbox(variables)), seed)


def clip(seed=1, shape=CLIP):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class CountsTest(parameterized.TestCase):

  @parameterized.parameters(18, 34, 50, 101)
  def test_parameters_equal_torchvision_and_tsn_equals_tsm(self, depth):
    import torchvision  # pylint: disable=g-import-not-at-top
    reference = getattr(torchvision.models, f'resnet{depth}')(num_classes=400)
    want = sum(p.numel() for p in reference.parameters())
    for family in ('tsn', 'tsm', 'tsm_online'):
      model = create_model(f'{family}_r{depth}', num_classes=400)
      variables = complexity.abstract_variables(model, (1, 8, 224, 224, 3))
      self.assertEqual(complexity.count_params(variables['params']), want,
                       family)

  def test_tsm_r50_costs_what_tsn_r50_costs(self):
    # REFERENCES.md: 24,327,632 parameters, 32.70 G MACs at 8×224².
    # Through `python -m vidjax.tools.profile`'s function.
    counts = {}
    for name in ('tsn_r50', 'tsm_r50', 'tsm_online_r50'):
      result = profile.profile(name, frames=8, size=224, num_classes=400,
                               compile_forward=False)
      counts[name] = (result['params'], result['macs'])
    self.assertEqual(counts['tsm_r50'][0], 24_327_632)
    self.assertEqual(round(counts['tsm_r50'][1] / 1e9, 2), 32.70)
    self.assertLen(set(counts.values()), 1)

  def test_the_shift_is_pad_slice_concat(self):
    # TSM's jaxpr adds no gather, scatter or in-place update to TSN's.
    def primitives(name):
      model = create_model(name, num_classes=5, **TINY)
      variables = complexity.abstract_variables(model, CLIP)
      jaxpr = jax.make_jaxpr(functools.partial(model.apply, train=True,
                                               mutable=['batch_stats'],
                                               rngs={'dropout':
                                                     jax.random.key(0)}))(
          variables, jnp.zeros(CLIP))
      found = set()

      def walk(jaxpr):
        for eqn in jaxpr.eqns:
          found.add(eqn.primitive.name)
          for sub in complexity._sub_jaxprs(eqn):
            walk(sub)
      walk(jaxpr.jaxpr)
      return found
    extra = primitives('tsm_r50') - primitives('tsn_r50')
    # convert_element_type: jnp.pad's scalar zero, cast to the input dtype.
    self.assertLessEqual(extra, {'pad', 'slice', 'concatenate',
                                 'convert_element_type'})
    self.assertIn('concatenate', primitives('tsm_r50'))
    for bad in ('gather', 'scatter', 'dynamic_update_slice'):
      self.assertNotIn(bad, primitives('tsm_r50'))


class NamesTest(parameterized.TestCase):

  def test_names_follow_the_block_hierarchy(self):
    model = create_model('tsm_r50', num_classes=400)
    variables = complexity.abstract_variables(model, (1, 8, 224, 224, 3))
    names = {'/'.join(p) for p in flax.traverse_util.flatten_dict(
        variables['params'])}
    for name in ('conv1/kernel', 'bn1/scale', 'fc/kernel', 'fc/bias',
                 'layer1/block0/conv1/kernel', 'layer1/block0/bn3/bias',
                 'layer1/block0/downsample/conv/kernel',
                 'layer1/block0/downsample/bn/scale',
                 'layer3/block5/conv2/kernel', 'layer4/block2/conv3/kernel'):
      self.assertIn(name, names)
    # Nothing auto-numbered by build order (Dense_0, Conv3D_1, ...).
    self.assertEmpty([n for n in names if re.search(r'[A-Z]\w*_\d', n)])
    stats = {'/'.join(p) for p in flax.traverse_util.flatten_dict(
        variables['batch_stats'])}
    self.assertIn('layer2/block0/downsample/bn/mean', stats)
    self.assertEqual(registry.get_spec('tsm_r50').head, 'fc')

  def test_resnet101_shifts_every_second_block_of_every_stage(self):
    # The official make_temporal_shift: n_round = 2 once layer3 has 23
    # blocks, applied in all four stages.
    blocks = resnet.shifted_blocks(101)
    self.assertEqual(blocks[:4], [(0, 0), (0, 2), (1, 0), (1, 2)])
    self.assertLen([b for b in blocks if b[0] == 2], 12)
    self.assertLen(blocks, 2 + 2 + 12 + 2)
    self.assertLen(resnet.shifted_blocks(50), 16)


class BehaviourTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_forward_shapes_and_finite(self):
    model, variables = tiny('tsm_r18')
    logits, features = self.variant(functools.partial(
        model.apply, return_features=True))(variables, clip())
    chex.assert_shape(logits, (2, 5))
    chex.assert_shape(features['frame_logits'], (2, 4, 5))
    chex.assert_tree_all_finite(features)
    chex.assert_trees_all_close(logits, features['frame_logits'].mean(1),
                                rtol=1e-6, atol=1e-6)

  def test_a_shift_of_no_channels_is_tsn(self):
    # shift_div above every width moves C // shift_div = 0 channels.
    tsn, variables = tiny('tsn_r18')
    nothing = create_model('tsm_r18', num_classes=5, shift_div=10_000, **TINY)
    x = clip()
    chex.assert_trees_all_close(nothing.apply(variables, x),
                                tsn.apply(variables, x), rtol=1e-6, atol=1e-6)

  @parameterized.parameters('tsm_r18', 'tsm_r50')
  def test_the_shift_changes_the_output(self, name):
    tsm, variables = tiny(name)
    tsn = create_model(name.replace('tsm', 'tsn'), num_classes=5, **TINY)
    x = clip()
    difference = np.abs(tsm.apply(variables, x) - tsn.apply(variables, x))
    self.assertGreater(difference.max(), 1e-4)

  @parameterized.parameters('tsn_r18', 'tsm_r18', 'tsm_online_r18')
  def test_only_tsn_ignores_the_frame_order(self, name):
    model, variables = tiny(name)
    x = clip()
    forward = model.apply(variables, x)
    backward = model.apply(variables, x[:, ::-1])
    if name.startswith('tsn'):
      chex.assert_trees_all_close(backward, forward, rtol=1e-5, atol=1e-6)
    else:
      self.assertGreater(np.abs(backward - forward).max(), 1e-4)

  def test_placements_differ(self):
    model, variables = tiny('tsm_r18')
    in_place = model.clone(placement='in_place')
    x = clip()
    self.assertGreater(np.abs(in_place.apply(variables, x) -
                              model.apply(variables, x)).max(), 1e-4)

  def test_temporal_pool_halves_time(self):
    model = create_model('tsm_r18', num_classes=5, temporal_pool=True, **TINY)
    variables = model.init(jax.random.key(0), jnp.zeros(CLIP))
    _, features = model.apply(variables, jnp.asarray(clip()),
                              return_features=True)
    chex.assert_shape(features['layer1'], (2, 4, 8, 8, 4))
    chex.assert_shape(features['layer2'], (2, 2, 4, 4, 8))
    chex.assert_shape(features['frame_logits'], (2, 2, 5))

  @parameterized.parameters('tsm_online_r18', 'tsm_online_r50')
  def test_streaming_equals_the_offline_causal_model(self, name):
    model, variables = tiny(name)
    x = clip(seed=3)
    _, features = model.apply(variables, x, return_features=True)
    step = jax.jit(lambda v, frame, state: model.apply(v, frame, state=state))
    state = resnet.init_stream_state(model, variables, x[:, 0].shape)
    chex.assert_trees_all_equal(state, jax.tree.map(jnp.zeros_like, state))
    self.assertLen(state, len(resnet.shifted_blocks(int(name[-2:]))))
    outs = []
    for t in range(x.shape[1]):
      logits, state = step(variables, x[:, t], state)
      outs.append(logits)
    chex.assert_trees_all_close(np.stack(outs, 1), features['frame_logits'],
                                rtol=1e-5, atol=1e-6)
    # An empty state is the reset: the same first frame.
    first, _ = model.apply(variables, x[:, 0], state={})
    chex.assert_trees_all_close(first, outs[0], rtol=1e-6, atol=1e-7)

  def test_bad_input(self):
    model, variables = tiny('tsm_r18')
    with self.assertRaisesRegex(VidjaxError, 'cannot stream'):
      model.apply(variables, clip()[:, 0], state={})
    with self.assertRaisesRegex(VidjaxError, r'clips \[N, T, H, W, 3\]'):
      model.apply(variables, clip()[:, 0])
    with self.assertRaisesRegex(VidjaxError, 'depth must be one of'):
      create_model('tsm_r18', num_classes=5, depth=20).init(
          jax.random.key(0), jnp.zeros(CLIP))
    with self.assertRaisesRegex(VidjaxError, 'shift must be one of'):
      create_model('tsm_r18', num_classes=5, shift='left').init(
          jax.random.key(0), jnp.zeros(CLIP))
    # A config's bad fraction is the user's error, not the layer's
    # ValueError: a bidirectional shift of 1/1 each way would move 2·C.
    with self.assertRaisesRegex(VidjaxError, 'shift_div must be an integer '
                                '>= 2 for a bidirectional shift, got 1'):
      create_model('tsm_r18', num_classes=5, shift_div=1).init(
          jax.random.key(0), jnp.zeros(CLIP))
    online, online_variables = tiny('tsm_online_r18')
    with self.assertRaisesRegex(VidjaxError, r'one frame \[N, H, W, 3\]'):
      online.apply(online_variables, clip(), state={})
    frame = clip()[:, 0]
    with self.assertRaisesRegex(VidjaxError, 'inference only'):
      online.apply(online_variables, frame, state={}, train=True)
    state = resnet.init_stream_state(online, online_variables, frame.shape)
    del state['layer2/block1']
    state['layer9/block0'] = state['layer1/block0']
    with self.assertRaisesRegex(VidjaxError, r"missing \['layer2/block1'\], "
                                r"unexpected \['layer9/block0'\]"):
      online.apply(online_variables, frame, state=state)

  def test_another_segment_count_warns_once(self):
    model, variables = tiny('tsm_r18')
    x = clip(shape=(1, 6, 32, 32, 3))
    resnet._WARNED_SEGMENTS.clear()
    with self.assertLogs(level='WARNING') as logs:
      model.apply(variables, x)
      model.apply(variables, x)
    self.assertLen([r for r in logs.output if '8 segments' in r], 1)
