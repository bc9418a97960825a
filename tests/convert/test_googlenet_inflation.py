"""ImageNet googlenet inflated into video schedules: a clip of one repeated
image must reproduce googlenet's activations (exactly for I2D; at interior
frames for models with temporal kernels), and bookkeeping is strict."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    'torch', reason='googlenet inflation tests need PyTorch '
    '(pip install torch)')
torchvision = pytest.importorskip(
    'torchvision', reason='googlenet inflation tests need torchvision '
    '(pip install torchvision)')

# pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax import VidjaxError
from vidjax.convert import inflate
from vidjax.convert import inflate_googlenet
from vidjax.convert import mapping
from tests.convert import torch_reference

TOLERANCE = 1e-4  # ||vidjax − torch|| / ||torch||, float32.
# Every even size gives googlenet's ceil-mode pools the same windows as TF
# SAME pooling, so each max-pool's input must be even: H divisible by 16
# (the 2×2 pool before Mixed_5b rounds alike on any size). I2D's logits also
# need the head to average all of Mixed_5c: vidjax pools VALID over a window
# shrunk to min(size, 7), googlenet over everything (adaptive), so H/32 ≤ 7.
# 160² (Mixed_5c 5×5) is the cheapest size that exercises the 5×5 → 1
# head pooling without being trivially 1×1.
LOGITS_SIZE = 160
# For intermediate features any multiple of 16 works; small keeps 3D cheap.
FEATURE_SIZE = 96


@pytest.fixture(scope='module')
def googlenet():
  torch.manual_seed(0)
  model = torchvision.models.googlenet(weights=None, aux_logits=False,
                                       init_weights=True,
                                       transform_input=False)
  torch_reference.randomise_batch_norm(
      model, lambda m: m(torch.randn(2, 3, 128, 128)))
  return model


@pytest.fixture(scope='module')
def state_dict(googlenet):
  return {k: v.numpy() for k, v in googlenet.state_dict().items()}


def run_googlenet(model, size, seed=1):
  """(image NCHW, logits, {vidjax endpoint: googlenet activation NCHW})."""
  image = torch.randn(1, 3, size, size,
                      generator=torch.Generator().manual_seed(seed))
  activations = {}
  hooks = [
      getattr(model, module).register_forward_hook(
          lambda m, i, out, name=name: activations.__setitem__(name, out))
      for module, name in (('inception3b', 'Mixed_3c'),
                           ('inception5b', 'Mixed_5c'))]
  try:
    with torch.no_grad():
      logits = model(image)
  finally:
    for hook in hooks:
      hook.remove()
  return (image.numpy(), logits.numpy(),
          {k: v.numpy() for k, v in activations.items()})


def run_video(model, variables, image, num_frames):
  """The image repeated over `num_frames` → (logits, features as NTCHW)."""
  video = np.repeat(image.transpose(0, 2, 3, 1)[:, None], num_frames, axis=1)
  logits, features = jax.jit(
      lambda v, x: model.apply(v, x, train=False, return_features=True))(
          variables, jnp.asarray(video))
  return np.asarray(logits), {
      k: np.asarray(v).transpose(0, 1, 4, 2, 3)
      for k, v in features.items() if k in ('Mixed_3c', 'Mixed_5c')}


def exact_frames(num_frames, layers):
  """Which output frames see only real, exact frames, layer by layer.

  A temporal conv zero-pads the clip: at a border frame the inflated kernel
  (2D kernel / kt, kt times) sums fewer than kt copies of the image, so that
  frame is not googlenet's. A max-pool pads with -inf, which never wins, but
  a window reaching an inexact frame is inexact. Each layer is
  (kind, kernel, stride, pad) with kind 'conv' or 'pool'.
  """
  exact = [True] * num_frames
  for kind, kernel, stride, pad in layers:
    size = len(exact)
    out = []
    for j in range((size + 2 * pad - kernel) // stride + 1):
      reads = range(j * stride - pad, j * stride - pad + kernel)
      real = [t for t in reads if 0 <= t < size]
      out.append(all(exact[t] for t in real) and
                 (kind == 'pool' or len(real) == kernel))
    exact = out
  return [t for t, ok in enumerate(exact) if ok]


def test_i2d_logits_equal_googlenet_at_every_frame(googlenet, state_dict):
  # 16 frames: the 2D stem keeps every 2nd frame (TF-slim's temporal stride),
  # leaving 8 at Mixed_3c and 2 at Mixed_5c, all of which must be exact.
  image, reference, activations = run_googlenet(googlenet, LOGITS_SIZE)
  model, variables = inflate_googlenet(state_dict, 'i2d')
  logits, features = run_video(model, variables, image, num_frames=16)
  assert logits.shape == reference.shape == (1, 1000)
  assert torch_reference.relative_error(logits, reference) <= TOLERANCE
  for name in ('Mixed_3c', 'Mixed_5c'):
    frames = features[name]
    assert frames.shape[1] == (8 if name == 'Mixed_3c' else 2)
    for t in range(frames.shape[1]):
      error = torch_reference.relative_error(frames[:, t],
                                             activations[name])
      assert error <= TOLERANCE, (
          name, t)


# Temporal layers up to Mixed_3c, for `exact_frames`. Each Inception block
# has a 3-tap temporal max-pool (Branch_3); a 3D block also 3×3×3 convs, and
# conv is the stricter kind. Separable units' temporal halves read only
# their centre tap, so they add nothing; Conv2d_2b is pointwise.
TEMPORAL_LAYERS = {
    # Stem 3×7×7 (kt 3, stride 2), Conv2d_2c, Mixed_3b, Mixed_3c separable.
    's3d': [('conv', 3, 2, 1), ('pool', 3, 1, 1), ('pool', 3, 1, 1)],
    # Stem 7×7×7 (kt 7, stride 2), then Conv2d_2c, Mixed_3b, Mixed_3c 3D.
    'i3d': [('conv', 7, 2, 3), ('conv', 3, 1, 1), ('conv', 3, 1, 1),
            ('conv', 3, 1, 1)],
}


@pytest.mark.parametrize('name,num_frames', [('s3d', 12), ('i3d', 20)])
def test_inflated_3d_models_match_googlenet_at_interior_frames(
    googlenet, state_dict, name, num_frames):
  image, _, activations = run_googlenet(googlenet, FEATURE_SIZE)
  model, variables = inflate_googlenet(state_dict, name)
  _, features = run_video(model, variables, image, num_frames)
  frames = features['Mixed_3c']
  exact = exact_frames(num_frames, TEMPORAL_LAYERS[name])
  # The frame counts are chosen so that the centre frame is exact: 12 → 6
  # stem frames for S3D (exact 3–5), 20 → 10 for I3D (exact 5 only).
  assert frames.shape[1] // 2 in exact, exact
  for t in range(frames.shape[1]):
    error = torch_reference.relative_error(frames[:, t], activations['Mixed_3c'])
    if t in exact:
      assert error <= TOLERANCE, (t, error)
    else:
      # The border analysis is tight: every other frame really differs.
      assert error > 1e-3, (t, error)


def test_kernels_follow_the_inflation_rules(state_dict):
  _, i3d = inflate_googlenet(state_dict, 'i3d')
  _, s3d = inflate_googlenet(state_dict, 's3d')
  conv1 = state_dict['conv1.conv.weight'].transpose(2, 3, 1, 0)
  stem = i3d['params']['Conv2d_1a_7x7']['conv']['kernel']
  assert stem.shape == (7, 7, 7, 3, 64)
  np.testing.assert_allclose(stem, np.broadcast_to(conv1 / 7, stem.shape))
  unit = s3d['params']['Mixed_4c']['Branch_1/Conv2d_0b_3x3']
  spatial = state_dict['inception4b.branch2.1.conv.weight']
  np.testing.assert_array_equal(unit['conv']['kernel'][0],
                                spatial.transpose(2, 3, 1, 0))
  eye = np.eye(224, dtype=np.float32)
  np.testing.assert_array_equal(unit['temporal']['kernel'][:, 0, 0],
                                np.stack([0 * eye, eye, 0 * eye]))
  np.testing.assert_array_equal(unit['temporal']['bias'], 0)
  np.testing.assert_array_equal(
      s3d['batch_stats']['Mixed_4c']['Branch_1/Conv2d_0b_3x3']['bn']['var'],
      state_dict['inception4b.branch2.1.bn.running_var'])


def test_gates_keep_their_init_and_are_reported(state_dict, caplog):
  # S3D with only Mixed_5c gated: the same bookkeeping as S3D-G, without
  # XLA compiling 37 random inits (~10 s on CPU).
  schedule = ('sep',) * 9 + ('sep+gate',)
  with caplog.at_level(logging.WARNING):
    _, gated = inflate_googlenet(state_dict, 's3d', schedule=schedule)
  _, s3d = inflate_googlenet(state_dict, 's3d')
  gated = mapping.flatten(gated)
  gates = {p for p in gated if 'gating' in '/'.join(p)}
  assert len(gates) == 4  # One per branch of Mixed_5c.
  assert 'Mixed_5c/Branch_3/gating/gate/kernel' in caplog.text
  assert all(np.abs(gated[p]).max() > 0 for p in gates)
  # Everything else is inflated as in S3D.
  rest = {p: v for p, v in gated.items() if p not in gates}
  expected = mapping.flatten(s3d)
  assert rest.keys() == expected.keys()
  for path, value in rest.items():
    np.testing.assert_array_equal(value, expected[path], err_msg=str(path))


def test_other_class_count_gets_a_fresh_classifier(state_dict):
  model, variables = inflate_googlenet(state_dict, 'i2d', num_classes=5)
  assert model.num_classes == 5
  assert variables['params']['Logits']['kernel'].shape == (1024, 5)
  np.testing.assert_array_equal(
      variables['params']['Conv2d_2b_1x1']['conv']['kernel'][0, 0, 0],
      state_dict['conv2.conv.weight'][:, :, 0, 0].T)


def test_skips_aux_classifiers_and_step_counters(state_dict):
  state = dict(state_dict)
  # As in torchvision's pretrained file, which keeps both aux classifiers.
  state['aux1.conv.conv.weight'] = np.zeros((128, 512, 1, 1), np.float32)
  state['aux2.fc2.bias'] = np.zeros((1000,), np.float32)
  assert any(k.endswith('num_batches_tracked') for k in state)
  _, variables = inflate_googlenet(state, 'i2d')
  assert 'aux1' not in str(list(mapping.flatten(variables)))


def test_rejects_unused_and_missing_tensors(state_dict):
  state = dict(state_dict)
  state['inception4a.branch5.conv.weight'] = np.zeros((8, 480, 1, 1))
  del state['inception4c.branch3.1.bn.running_var']
  with pytest.raises(VidjaxError) as error:
    inflate_googlenet(state, 'i3d')
  message = str(error.value)
  assert 'unexpected' in message
  assert 'inception4a.branch5.conv.weight' in message
  assert 'missing' in message
  assert 'inception4c.branch3.1.bn.running_var' in message


def test_rejects_misshapen_tensor(state_dict):
  state = dict(state_dict)
  state['conv3.conv.weight'] = np.zeros((192, 64, 5, 5), np.float32)
  with pytest.raises(VidjaxError, match=r'shape mismatch.*conv3\.conv'):
    inflate_googlenet(state, 's3d')


def test_rejects_numerics_override_and_non_googlenet(state_dict):
  with pytest.raises(VidjaxError, match='numerics'):
    inflate_googlenet(state_dict, 'i3d', numerics=None)
  with pytest.raises(VidjaxError, match='googlenet'):
    inflate_googlenet({'features.0.weight': np.zeros((1,))}, 'i3d')


def test_inflate_kernel_keeps_the_response_of_constant_input():
  weight = np.random.default_rng(0).normal(size=(4, 2, 3, 3))
  kernel = inflate.inflate_kernel(weight, 5)
  assert kernel.shape == (5, 3, 3, 2, 4)
  np.testing.assert_allclose(kernel.sum(0), weight.transpose(2, 3, 1, 0))
  with pytest.raises(ValueError):
    inflate.inflate_kernel(weight[None], 3)
