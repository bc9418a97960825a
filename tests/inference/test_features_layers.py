"""inference/layers.py: layer names per family, their capture, pooling."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from tests.inference import workdirs
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib
from vidjax.inference import layers
from vidjax.models import create_model

# 'plain' kernels: the custom ones take minutes to compile on a busy CPU,
# and capture does not depend on them.
FAMILIES = {
    'inception': workdirs.tiny_config(
        's3dg', 4, 24, depth_multiplier=0.125, min_depth=8, kernels='plain'),
    'resnet': workdirs.tiny_config('tsm_r18', 4, 32, width=8,
                                   kernels='plain'),
    'timesformer': workdirs.tiny_config(
        'timesformer', 2, 16, embed_dim=16, depth=2, num_heads=2,
        patch_size=8, image_size=16, kernels='plain'),
}
ORDER = {
    'inception': [
        'Conv2d_1a_7x7', 'Conv2d_2b_1x1', 'Conv2d_2c_3x3_gating',
        'Conv2d_2c_3x3', 'MaxPool_3a_3x3', 'Mixed_3b', 'Mixed_3c',
        'MaxPool_4a_3x3', 'Mixed_4b', 'Mixed_4c', 'Mixed_4d', 'Mixed_4e',
        'Mixed_4f', 'MaxPool_5a_2x2', 'Mixed_5b', 'Mixed_5c', 'prelogits',
        'logits'],
    'resnet': [
        'conv1', 'bn1', 'layer1/block0', 'layer1/block1', 'layer1',
        'layer2/block0', 'layer2/block1', 'layer2', 'layer3/block0',
        'layer3/block1', 'layer3', 'layer4/block0', 'layer4/block1',
        'layer4', 'prelogits', 'frame_logits', 'logits'],
    'timesformer': [
        'patch_embed', 'blocks_0/cls', 'blocks_0/patches', 'blocks_1/cls',
        'blocks_1/patches', 'patches', 'norm', 'features', 'prelogits',
        'logits'],
}
HEADS = {'inception': 'Logits', 'resnet': 'fc', 'timesformer': 'head'}


def _model(config):
  return create_model(config.model_name, num_classes=5,
                      **config.model.to_dict())


def random_variables(model, clips, seed=0):
  """Random weights of init's shapes, without compiling init (an eager
  or jitted init of the tiny S3D-G takes 40 s or more on a busy CPU)."""
  abstract = jax.eval_shape(lambda x: nn.unbox(model.init(
      jax.random.key(0), x, train=False)), clips)
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path[-1:])
    if 'var' in name or 'scale' in name:  # Positive, near 1.
      value = rng.uniform(0.5, 1.5, leaf.shape)
    else:
      fan_in = int(np.prod(leaf.shape[:-1])) or 1
      value = rng.normal(size=leaf.shape) / np.sqrt(fan_in)
    return value.astype(leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


class Family:
  """A tiny random model of a family, a batch of 2 clips and its outputs."""

  def __init__(self, family):
    config = FAMILIES[family]
    self.model = _model(config)
    self.contract = contract_lib.from_config(config, num_classes=5,
                                             class_names=None)
    shape = (2, config.data.num_frames, config.data.crop_size,
             config.data.crop_size, 3)
    self.clips = np.random.default_rng(1).normal(size=shape).astype(
        np.float32)
    self.variables = random_variables(self.model, self.clips)
    self.head = HEADS[family]

    @jax.jit  # One compile: the model's own outputs, and the capture.
    def run(v, x):
      return (self.model.apply(v, x, train=False, return_features=True),
              layers.activations(self.model, v, x, self.head))

    (self.logits, self.features), self.acts = jax.tree.map(
        np.asarray, run(self.variables, self.clips))


@pytest.fixture(scope='module', params=list(FAMILIES))
def family(request):
  return request.param, Family(request.param)


def test_list_layers_in_forward_order(family):
  name, f = family
  listed = layers.list_layers(f.model, f.contract)
  assert list(listed) == ORDER[name]
  # One clip's shapes, as the activations have them (batch 2 here).
  assert listed == {k: v.shape[1:] for k, v in f.acts.items()}


def test_named_features_are_the_models(family):
  _, f = family
  for key, value in f.features.items():
    np.testing.assert_allclose(f.acts[key], value, rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(f.acts['logits'], f.logits, rtol=1e-6,
                             atol=1e-6)


def test_module_outputs_are_captured(family):
  name, f = family
  a = f.acts
  # A module's output and the feature the model made of it agree.
  same = {
      'inception': [('Conv2d_2c_3x3_gating', 'Conv2d_2c_3x3')],
      'resnet': [(f'layer{s}/block1', f'layer{s}') for s in range(1, 5)],
      'timesformer': [('blocks_1/patches', 'patches'),
                      ('norm', 'features')],
  }[name]
  for module, feature in same:
    np.testing.assert_array_equal(a[module], a[feature])
  # Blocks differ from one another (each is its own capture).
  if name == 'resnet':
    assert np.abs(a['layer1/block0'] - a['layer1/block1']).max() > 1e-3
  if name == 'timesformer':
    assert a['blocks_0/cls'].shape == (2, 1, 16)
    assert np.abs(a['blocks_0/patches'] - a['blocks_1/patches']).max() > 1e-3


def test_prelogits_map_to_the_logits(family):
  """The pre-logits, mean-pooled (numpy), through the classifier's affine
  map (numpy) are the logits."""
  name, f = family
  head = f.variables['params'][f.head]
  pre = f.acts['prelogits']
  pooled = pre.mean(axis=tuple(range(1, pre.ndim - 1))) if pre.ndim > 2 \
      else pre
  np.testing.assert_allclose(pooled @ head['kernel'] + head['bias'],
                             f.logits, rtol=1e-5, atol=1e-5)
  if name == 'resnet':  # fc reads each frame's spatial mean of layer4.
    np.testing.assert_allclose(pooled, f.features['layer4'].mean((1, 2, 3)),
                               rtol=1e-5, atol=1e-6)
  if name == 'timesformer':
    np.testing.assert_array_equal(pre, f.features['features'])


def test_extractor_pools_and_averages_views(family):
  """make_extractor against numpy on the captured activations: 1 window
  of the 2 clips as its 2 views (each family mean-pooled and averaged,
  ResNet's also as is, per view)."""
  name, f = family
  for pool, views in [('mean', 'mean')] + [('none', 'all')] * (
      name == 'resnet'):
    _check_extractor(name, f, pool, views)


def _check_extractor(name, f, pool, views):
  layer = {'inception': 'Mixed_4b', 'resnet': 'layer2/block0',
           'timesformer': 'blocks_0/patches'}[name]
  extract = layers.make_extractor(f.model, f.contract.model_name, layer,
                                  pool, average_views=views == 'mean')
  got = np.asarray(extract(f.variables, f.clips[None]))
  act = f.acts[layer]
  want = act.mean(axis=tuple(range(1, act.ndim - 1))) if pool == 'mean' \
      else act
  want = want.mean(0) if views == 'mean' else want
  assert got.shape == (1, *want.shape)
  assert got.shape[1:] == ((act.shape[-1],) if views == 'mean' else
                           (2, *layers.pooled_shape(act.shape[1:], pool)))
  np.testing.assert_allclose(got[0], want, rtol=1e-5, atol=1e-6)


def test_unknown_layer_lists_the_names():
  names = {'conv1': (4,), 'layer1': (4,), 'prelogits': (8,)}
  with pytest.raises(VidjaxError) as e:
    layers.check_layer('layer9', names, 'tsm_r18')
  assert str(e.value) == ("unknown layer 'layer9' for model tsm_r18; its "
                          'layers: conv1, layer1, prelogits')
  assert layers.check_layer('layer1', names, 'tsm_r18') == 'layer1'
  with pytest.raises(VidjaxError, match="unknown pooling 'max'"):
    layers.check_pool('max')


def test_remat_is_dropped_for_inference():
  config = FAMILIES['resnet']
  model = _model(config)
  contract = contract_lib.from_config(config, num_classes=5, class_names=None)
  remat = model.clone(remat='block')
  assert layers.for_inference(remat).remat == 'none'
  assert list(layers.list_layers(remat, contract)) == ORDER['resnet']
  assert isinstance(layers.for_inference(model), nn.Module)
