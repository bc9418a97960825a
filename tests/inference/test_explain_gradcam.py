"""Grad-CAM: a known region, the formula against a closed form, layers."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.inference import workdirs
from vidjax.errors import VidjaxError
from vidjax.inference.explain import gradcam
from vidjax.models import create_model
from vidjax.models import timesformer


class ReluConv(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.relu(nn.Conv(2, (1, 3, 3), strides=(1, 2, 2), padding='SAME',
                           name='conv')(x))


class Spot(nn.Module):
  """Class 0 is the mean of a strided conv's ReLU, class 1 its negative:
  with a conv summing the colours, only bright pixels can raise class 0."""

  @nn.compact
  def __call__(self, x, train=False, return_features=False):
    del train
    a = ReluConv(name='conv')(x)
    logits = nn.Dense(2, name='head')(a.mean(axis=(1, 2, 3)))
    return (logits, {'conv': a, 'logits': logits}) if return_features else (
        logits)


def spot_variables():
  kernel = np.zeros((1, 3, 3, 3, 2), np.float32)
  kernel[0, 1, 1, :, 0] = 1.0           # Channel 0: the centre pixel's sum.
  kernel[0, 1, 1, :, 1] = -1.0          # Channel 1: its negative (dark).
  head = np.array([[1.0, -1.0], [0.0, 0.0]], np.float32)
  return {'params': {'conv': {'conv': {'kernel': kernel,
                                       'bias': np.zeros(2)}},
                     'head': {'kernel': head, 'bias': np.zeros(2)}}}


def test_the_cam_peaks_on_the_one_region_that_drives_the_class():
  clip = np.zeros((1, 4, 16, 16, 3), np.float32)
  clip[0, 2, 8:12, 4:8] = 1.0           # One bright square in frame 2.
  cam = gradcam.gradcam(Spot(), spot_variables(), clip)
  assert cam.layer == 'conv' and cam.target == 0
  assert cam.cam.shape == (4, 8, 8) and cam.upsampled.shape == (4, 16, 16)
  # Only the square's layer positions are non-zero at the layer's size
  # (its conv outputs: rows 4..5, columns 2..3 of frame 2).
  want = np.zeros((4, 8, 8))
  want[2, 4:6, 2:4] = 3.0 / (4 * 8 * 8)
  np.testing.assert_allclose(cam.cam, want, rtol=1e-6, atol=1e-12)
  peak = np.unravel_index(cam.upsampled.argmax(), cam.upsampled.shape)
  assert peak[0] == 2 and 8 <= peak[1] < 12 and 4 <= peak[2] < 8
  # Class 1 falls with the square: nothing on the map supports it.
  assert gradcam.gradcam(Spot(), spot_variables(), clip,
                         target=1).upsampled.max() == 0.0


def he_normal(shapes, seed=0):
  """Every kernel He-normal, norms and statistics the identity: activations
  stay alive through the blocks (no eager init either)."""
  rng = np.random.default_rng(seed)

  def leaf(path, shape):
    name = path[-1].key
    if name == 'kernel':
      fan_in = np.prod(shape.shape[:-1])
      return (rng.standard_normal(shape.shape) * np.sqrt(2 / fan_in)).astype(
          np.float32)
    return np.full(shape.shape, float(name in ('scale', 'var')), np.float32)
  return jax.tree_util.tree_map_with_path(leaf, shapes)


@pytest.fixture(scope='module')
def tsn():
  config = workdirs.tiny_config('tsn_r18', num_frames=2, crop_size=64,
                                width=8)
  model = create_model('tsn_r18', num_classes=3, **config.model.to_dict())
  clip = np.random.default_rng(0).standard_normal(
      (1, 2, 64, 64, 3)).astype(np.float32)
  shapes = nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), clip, train=False)))
  return model, he_normal(dict(shapes)), clip


def test_matches_the_closed_form_at_tsns_last_block(tsn):
  # TSN's head is linear in layer4's activations A [T, H, W, C]: the logit
  # of class k is mean over (t, h, w) of A · fc[:, k] (+ bias), so the
  # gradient is fc[:, k] / (T·H·W) everywhere, and Grad-CAM is
  # ReLU(A · fc[:, k]) / (T·H·W).
  model, variables, clip = tsn
  cam = gradcam.gradcam(model, variables, clip, 'layer4', target=2)
  logits, features = model.apply(variables, clip, train=False,
                                 return_features=True)
  a = np.asarray(features['layer4'][0], np.float64)
  w = variables['params']['fc']['kernel'][:, 2].astype(np.float64)
  size = np.prod(a.shape[:3])
  np.testing.assert_allclose(cam.weights, w / size, rtol=1e-5)
  np.testing.assert_allclose(cam.cam, np.maximum(a @ w, 0) / size,
                             rtol=1e-4, atol=1e-7)
  np.testing.assert_allclose(cam.logits, logits[0], rtol=1e-5)
  assert cam.target == 2 and cam.upsampled.shape == (2, 64, 64)
  assert cam.cam.max() > 0


def test_layers_are_the_features_a_module_outputs(tsn):
  model, variables, clip = tsn
  # TSN's blocks shift nothing, so a block passes its input on: each
  # stage is still found at its own last block.
  want = {f'layer{i}': (f'layer{i}/block1',) for i in range(1, 5)}
  assert gradcam.layers(model, variables, clip) == want
  # Rematerialised blocks output values inside a checkpointed call: the
  # model is explained without remat (same parameters, same values).
  assert gradcam.layers(model.clone(remat='block'), variables, clip) == want
  with pytest.raises(VidjaxError, match=r"^unknown layer 'Mixed_5c'; "
                     r'layers: layer1, layer2, layer3, layer4$'):
    gradcam.gradcam(model, variables, clip, 'Mixed_5c')
  with pytest.raises(VidjaxError, match=r'--target=3 is not a class of this '
                     r'model \(0..2\)'):
    gradcam.gradcam(model, variables, clip, target=3)


def test_inception_layers_include_the_gated_conv():
  config = workdirs.tiny_config('s3dg', num_frames=4, crop_size=32)
  model = create_model('s3dg', num_classes=3,
                                **config.model.to_dict())
  clip = jnp.zeros((1, 4, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), clip)
  layers = gradcam.layers(model, variables, clip)
  assert list(layers) == ['Conv2d_1a_7x7', 'Conv2d_2c_3x3', 'Mixed_3b',
                          'Mixed_3c', 'Mixed_4b', 'Mixed_4c', 'Mixed_4d',
                          'Mixed_4e', 'Mixed_4f', 'Mixed_5b', 'Mixed_5c']
  # S3D-G gates Conv2d_2c_3x3: the feature is the gating's output.
  assert layers['Conv2d_2c_3x3'] == ('Conv2d_2c_3x3_gating',)
  assert gradcam.resolve_layer(layers, None) == 'Mixed_5c'


def test_a_timesformer_is_refused():
  with pytest.raises(VidjaxError, match=r'^Grad-CAM needs a convolutional '
                     r'model; TimeSformer has no conv feature maps \(use '
                     r'--method=rollout\)$'):
    gradcam.gradcam(timesformer.TimeSformer(3), {}, np.zeros((1, 1)))
