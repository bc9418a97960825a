"""The Inception-v1 video family: schedules, shapes and exact parameter counts."""
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax import VidjaxError
from vidjax.models import complexity, create_model, inception, list_models
from vidjax.models import registry

TINY = dict(depth_multiplier=0.125, min_depth=8)


def abstract_variables(model, shape=(1, 16, 224, 224, 3)):
  return complexity.abstract_variables(model, shape)


class ParameterCountTest(parameterized.TestCase):
  """Counts computed from TF-slim's s3dg.py/i3d.py with 400 classes."""

  @parameterized.parameters(('s3dg', 9_518_848), ('s3d', 8_299_520),
                            ('i3d', 12_689_984))
  def test_equals_tf_slim(self, name, expected):
    variables = abstract_variables(create_model(name, num_classes=400))
    self.assertEqual(complexity.count_params(variables['params']), expected)

  def test_gating_adds_c_squared_per_gate(self):
    # S3D-G − S3D = Σ C² over gated outputs: Conv2d_2c (192) and the four
    # branch outputs of every Inception block.
    widths = [192] + [w for ws in inception.INCEPTION_WIDTHS.values()
                      for w in (ws[0], ws[2], ws[4], ws[5])]
    s3dg = abstract_variables(create_model('s3dg', num_classes=400))
    s3d = abstract_variables(create_model('s3d', num_classes=400))
    self.assertEqual(complexity.count_params(s3dg['params']) - complexity.count_params(s3d['params']),
                     sum(c * c for c in widths))


class ScheduleTest(parameterized.TestCase):

  @parameterized.parameters('i2d', 'i3d', 's3d', 's3dg')
  def test_pointwise_convs_and_gates(self, name):
    params = abstract_variables(create_model(name, num_classes=5, **TINY),
                                (1, 8, 32, 32, 3))['params']
    # 1×1×1 convs stay pointwise in every model.
    for block in inception.INCEPTION_WIDTHS:
      kernel = params[block]['Branch_0/Conv2d_0a_1x1']['conv']['kernel']
      self.assertEqual(kernel.shape[:3], (1, 1, 1))
    gated = [k for k in jax.tree_util.tree_flatten_with_path(params)[0]
             if 'gating' in jax.tree_util.keystr(k[0])]
    self.assertEqual(bool(gated), name == 's3dg')

  # Per scheduled block (Conv2d_2c, 3b, 3c, 4b-4f, 5b, 5c): the conv kind,
  # written out by hand from the paper's Fig. 2 definitions; and the stem.
  FAMILY = {
      'i2d': ('2' * 10, (1, 7, 7)),
      'i3d': ('3' * 10, (7, 7, 7)),
      's3d': ('s' * 10, (3, 7, 7)),
      's3dg': ('s' * 10, (3, 7, 7)),
      's3d_torchvision': ('s' * 10, (1, 7, 7)),
      'bottom_heavy_i3d_3a': ('3' + '2' * 9, (7, 7, 7)),
      'bottom_heavy_i3d_4a': ('333' + '2' * 7, (7, 7, 7)),
      'bottom_heavy_i3d_5a': ('3' * 8 + '22', (7, 7, 7)),
      'top_heavy_i3d_3a': ('2' + '3' * 9, (1, 7, 7)),
      'top_heavy_i3d_4a': ('222' + '3' * 7, (1, 7, 7)),
      'top_heavy_i3d_5a': ('2' * 8 + '33', (1, 7, 7)),
      'bottom_heavy_s3d_3a': ('s' + '2' * 9, (3, 7, 7)),
      'bottom_heavy_s3d_4a': ('sss' + '2' * 7, (3, 7, 7)),
      'bottom_heavy_s3d_5a': ('s' * 8 + '22', (3, 7, 7)),
      'top_heavy_s3d_3a': ('2' + 's' * 9, (1, 7, 7)),
      'top_heavy_s3d_4a': ('222' + 's' * 7, (1, 7, 7)),
      'top_heavy_s3d_5a': ('2' * 8 + 'ss', (1, 7, 7)),
      'fast_s3d': ('222' + 's' * 7, (1, 7, 7)),
  }

  def test_family_is_registered(self):
    inception_models = {n for n in list_models()
                        if registry.get_spec(n).family == 'inception'}
    self.assertEqual(set(self.FAMILY), inception_models)

  @parameterized.named_parameters((n, n) for n in sorted(FAMILY))
  def test_named_model_kernel_shapes(self, name):
    kinds, stem = self.FAMILY[name]
    params = abstract_variables(create_model(name, num_classes=5, **TINY),
                                (1, 8, 32, 32, 3))['params']
    stem_params = params['Conv2d_1a_7x7']
    self.assertEqual(stem_params['conv']['kernel'].shape[:3], stem)
    if name == 's3d_torchvision':  # Separable stem: (1,7,7) then (7,1,1).
      self.assertEqual(stem_params['temporal']['kernel'].shape[:3], (7, 1, 1))
    expect = {'2': ((1, 3, 3), None), '3': ((3, 3, 3), None),
              's': ((1, 3, 3), (3, 1, 1))}
    for block, kind in zip(inception.SCHEDULED_BLOCKS, kinds):
      conv, temporal = expect[kind]
      units = ([params[block]] if block == 'Conv2d_2c_3x3' else
               [params[block][f'Branch_{b}/Conv2d_0b_3x3'] for b in (1, 2)])
      for unit in units:
        self.assertEqual(unit['conv']['kernel'].shape[:3], conv,
                         f'{name} {block}')
        if temporal:
          self.assertEqual(unit['temporal']['kernel'].shape[:3], temporal)
        else:
          self.assertNotIn('temporal', unit)

  @parameterized.parameters('i2d', 'top_heavy_s3d_4a')
  def test_2d_stem_still_strides_time(self, name):
    # TF-slim's Conv2d_1a has stride 2 in T, H and W whatever its kernel.
    # A question of shapes alone: traced, not run.
    model = create_model(name, num_classes=5, **TINY)
    video = jax.ShapeDtypeStruct((1, 8, 32, 32, 3), jnp.float32)
    variables = abstract_variables(model, video.shape)
    _, features = jax.eval_shape(
        lambda v, x: model.apply(v, x, return_features=True), variables, video)
    chex.assert_shape(features['Conv2d_1a_7x7'], (1, 4, 16, 16, 8))

  def test_mixed_schedule_bottom_heavy(self):
    # 3D in the bottom blocks, 2D on top: the paper's Bottom-Heavy-I3D.
    schedule = ('3d',) * 3 + ('2d',) * 7
    params = abstract_variables(
        create_model('i3d', num_classes=5, schedule=schedule, **TINY),
        (1, 8, 32, 32, 3))['params']
    k = lambda b: params[b]['Branch_1/Conv2d_0b_3x3']['conv']['kernel'].shape
    self.assertEqual(k('Mixed_3c')[0], 3)
    self.assertEqual(k('Mixed_4b')[0], 1)

  def test_bad_schedule(self):
    model = create_model('s3dg', num_classes=5, schedule=('sep',) * 3)
    with self.assertRaisesRegex(ValueError, 'schedule needs 10 entries'):
      abstract_variables(model, (1, 8, 32, 32, 3))
    model = create_model('s3dg', num_classes=5, schedule=('4d',) * 10)
    with self.assertRaisesRegex(ValueError, 'bad schedule entry'):
      abstract_variables(model, (1, 8, 32, 32, 3))


class ForwardTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('s3dg', 's3dg'), ('i3d', 'i3d'))
  def test_logits_and_features(self, name):
    model = create_model(name, num_classes=7, **TINY)
    video = jax.random.normal(jax.random.key(1), (2, 8, 32, 32, 3))
    variables = nn.unbox(model.init(jax.random.key(0), video))
    logits, features = self.variant(
        lambda v, x: model.apply(v, x, return_features=True))(variables, video)
    chex.assert_shape(logits, (2, 7))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)
    self.assertEqual(features['Mixed_5c'].shape[-1], 1024 // 8)
    # T: 8 → 4 (stem) → 2 (MaxPool_4a) → 1 (MaxPool_5a); 32 px → 1.
    self.assertEqual(features['Mixed_5c'].shape[1:4], (1, 1, 1))

  def test_train_mode_updates_batch_stats_and_uses_dropout(self):
    model = create_model('s3dg', num_classes=3, **TINY)
    video = jax.random.normal(jax.random.key(1), (2, 4, 32, 32, 3))
    variables = nn.unbox(model.init(jax.random.key(0), video))
    _, updates = model.apply(variables, video, train=True,
                             mutable=['batch_stats'],
                             rngs={'dropout': jax.random.key(2)})
    before = variables['batch_stats']['Conv2d_1a_7x7']['bn']['mean']
    after = updates['batch_stats']['Conv2d_1a_7x7']['bn']['mean']
    self.assertFalse(np.allclose(before, after))

  def test_numerics_by_name(self):
    # The torchvision preset puts BN (with a scale) after the temporal half;
    # TF-slim gives it a bias instead.
    unit = lambda v: v['params']['Mixed_3b']['Branch_1/Conv2d_0b_3x3']  # noqa: E731
    slim = abstract_variables(create_model('s3d', num_classes=3, **TINY),
                              (1, 8, 32, 32, 3))
    tv = abstract_variables(
        create_model('s3d', num_classes=3, numerics='torchvision', **TINY),
        (1, 8, 32, 32, 3))
    self.assertEqual(set(unit(slim)), {'conv', 'bn', 'temporal'})
    self.assertNotIn('scale', unit(slim)['bn'])  # slim BN has no gamma.
    self.assertIn('bias', unit(slim)['temporal'])
    self.assertEqual(set(unit(tv)), {'conv', 'bn', 'temporal', 'temporal_bn'})
    self.assertIn('scale', unit(tv)['temporal_bn'])
    with self.assertRaisesRegex(ValueError, "unknown numerics 'nope'"):
      abstract_variables(create_model('s3d', num_classes=3, numerics='nope'),
                         (1, 8, 32, 32, 3))

  def test_flow_stem_takes_two_channels(self):
    model = create_model('s3dg', num_classes=3, **TINY)
    variables = abstract_variables(model, (1, 8, 32, 32, 2))
    self.assertEqual(
        variables['params']['Conv2d_1a_7x7']['conv']['kernel'].shape[3], 2)


class RegistryTest(parameterized.TestCase):

  def test_lists_the_family(self):
    self.assertContainsSubset({'s3dg', 's3d', 'i3d', 'i2d'}, list_models())

  def test_unknown_model(self):
    with self.assertRaisesRegex(VidjaxError, "unknown model 'nope'.*s3dg"):
      create_model('nope', num_classes=3)

  def test_bad_override(self):
    with self.assertRaisesRegex(VidjaxError, 'bad options'):
      create_model('s3dg', num_classes=3, not_a_field=1)


class KernelSetsTest(parameterized.TestCase):
  """The custom and the plain kernel sets are the same model.

  Same variables, and the same eval-mode outputs up to the rounding of
  different conv algorithms (~1e-5 on intermediate features). Train mode is
  not compared end to end: at this size BN normalises 16 values per channel
  at the top and amplifies that rounding ~100x. Each kernel set's parts are
  tested exactly against the other's where it matters (tests/kernels/): the
  BN+ReLU gradient against autodiff (test_norm), the pools against
  reduce_window including gradients and ties (test_pool), polyphase strided
  convs against XLA's (test_conv).
  """

  def test_an_unknown_kernel_set_names_the_known_ones(self):
    model = create_model('s3dg', num_classes=5, kernels='xla', **TINY)
    with self.assertRaisesRegex(VidjaxError, "unknown kernels 'xla'; "
                                'known: auto, custom, plain'):
      model.init(jax.random.key(0), jnp.zeros((1, 8, 32, 32, 3)))

  @parameterized.named_parameters(('s3dg', 's3dg'), ('i3d', 'i3d'),
                                  ('s3d_torchvision', 's3d_torchvision'))
  def test_same_parameters_and_values(self, name):
    video = jax.random.normal(jax.random.key(1), (2, 8, 32, 32, 3))
    outputs = {}
    for kernels in ('custom', 'plain'):
      model = create_model(name, num_classes=5, depth_multiplier=0.125,
                           min_depth=8, kernels=kernels)
      variables = nn.unbox(model.init(jax.random.key(0), video))
      logits = jax.jit(lambda v, m=model: m.apply(v, video))(variables)
      outputs[kernels] = (variables, logits)
    chex.assert_trees_all_equal(outputs['custom'][0], outputs['plain'][0])
    chex.assert_trees_all_close(outputs['custom'][1], outputs['plain'][1],
                               rtol=1e-4, atol=1e-5)

  def test_remat_changes_nothing_but_memory(self):
    video = jax.random.normal(jax.random.key(1), (1, 8, 32, 32, 3))
    grads, variables = {}, None
    for remat in ('none', 'block', 'full'):
      model = create_model('s3dg', num_classes=5, depth_multiplier=0.125,
                           min_depth=8, dropout_rate=0.0, remat=remat)
      # Remat renames nothing: one init serves the three (apply would fail
      # on a missing or extra name).
      if variables is None:
        variables = nn.unbox(jax.jit(model.init)(jax.random.key(0), video))
      grads[remat] = jax.jit(jax.grad(lambda p, m=model, v=variables: jnp.sum(
          m.apply({'params': p, 'batch_stats': v['batch_stats']}, video,
                  train=True, mutable=['batch_stats'])[0])))(
                      variables['params'])
    chex.assert_trees_all_close(grads['none'], grads['block'], rtol=1e-5,
                                atol=1e-7)
    chex.assert_trees_all_close(grads['none'], grads['full'], rtol=1e-5,
                                atol=1e-7)
    with self.assertRaisesRegex(ValueError, 'unknown remat'):
      create_model('s3dg', num_classes=5, remat='most').init(
          jax.random.key(0), video)
