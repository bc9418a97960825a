"""torchvision's S3D → vidjax: logit parity, strict bookkeeping, the CLI."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    'torch', reason='converter parity tests need PyTorch (pip install torch)')
torchvision = pytest.importorskip(
    'torchvision',
    reason='converter parity tests need torchvision (pip install torchvision)')

# pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax import VidjaxError
from vidjax import convert
from vidjax.convert import mapping
from tests.convert import torch_reference

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
NUM_CLASSES = 5
TOLERANCE = 1e-4  # ||vidjax − torch|| / ||torch||, float32.


@pytest.fixture(scope='module')
def torch_model():
  torch.manual_seed(0)
  model = torchvision.models.video.s3d(num_classes=NUM_CLASSES)
  torch_reference.randomise_batch_norm(
      model, lambda m: m.features(torch.randn(1, 3, 16, 128, 128)))
  return model


@pytest.fixture(scope='module')
def converted(torch_model):
  return convert.load_torch('s3d_torchvision', torch_model.state_dict())


@pytest.fixture(scope='module')
def run_vidjax(converted):
  """NCTHW numpy clip → (logits, Mixed_5c features as NCTHW)."""
  model, variables = converted

  @jax.jit
  def forward(variables, video):
    logits, features = model.apply(variables, video, train=False,
                                   return_features=True)
    return logits, features['Mixed_5c']

  def run(clip_ncthw):
    logits, mixed_5c = forward(
        variables, jnp.asarray(clip_ncthw.transpose(0, 2, 3, 4, 1)))
    return np.asarray(logits), np.asarray(mixed_5c).transpose(0, 4, 1, 2, 3)
  return run


@pytest.fixture(scope='module')
def numpy_state_dict(torch_model):
  return {k: v.numpy() for k, v in torch_model.state_dict().items()}


def random_clip(shape, seed=1):
  generator = torch.Generator().manual_seed(seed)
  return torch.randn(1, 3, *shape, generator=generator)


# torchvision's head is a VALID 2×7×7 average pool over Mixed_5c, which is
# T/8 × H/32 × W/32 (as its pools round), so torchvision raises for clips
# shorter than 13 frames or smaller than 209² ("input image ... smaller than
# kernel size"); logits can only be compared from there up.
#  - 14×224²: the size torchvision evaluates at. Even sizes matter: TF's
#    SAME padding equals torch's symmetric padding on odd sizes but not on
#    even ones (SAME here gives a relative error of ~0.15).
#  - 21×210×242: odd frame count, non-square frames, and a 3×7×8 Mixed_5c,
#    so the head averages 2×1×2 pool windows, not one.
@pytest.mark.parametrize('shape', [(14, 224, 224), (21, 210, 242)],
                         ids=lambda s: 'x'.join(map(str, s)))
def test_logits_match_torchvision(torch_model, run_vidjax, shape):
  clip = random_clip(shape)
  with torch.no_grad():
    reference = torch_model(clip).numpy()
  logits, _ = run_vidjax(clip.numpy())
  assert logits.shape == (1, NUM_CLASSES)
  assert torch_reference.relative_error(logits, reference) <= TOLERANCE


def test_features_match_torchvision_on_a_small_clip(torch_model,
                                                    run_vidjax):
  # Below the head's minimum torchvision's backbone still runs, so its
  # features check padding and pool rounding where every stage sees odd
  # sizes (Mixed_5c is 1×2×3 here, each pool's floor/ceil matters).
  clip = random_clip((7, 80, 112), seed=2)
  with torch.no_grad():
    reference = torch_model.features(clip).numpy()
  _, mixed_5c = run_vidjax(clip.numpy())
  assert mixed_5c.shape == reference.shape
  assert torch_reference.relative_error(mixed_5c, reference) <= TOLERANCE


def test_numpy_state_dict_converts_like_tensors(converted, numpy_state_dict):
  model, variables = convert.load_torch('s3d_torchvision', numpy_state_dict)
  assert model.num_classes == NUM_CLASSES
  expected = mapping.flatten(converted[1])
  actual = mapping.flatten(variables)
  assert actual.keys() == expected.keys()
  for path, value in actual.items():
    assert value.dtype == np.float32, path
    np.testing.assert_array_equal(value, expected[path], err_msg=str(path))


def test_rejects_unused_tensor(numpy_state_dict):
  state = dict(numpy_state_dict)
  state['features.5.branch4.0.weight'] = np.zeros((8, 192, 1, 1, 1))
  with pytest.raises(VidjaxError,
                     match=r'unexpected .*features\.5\.branch4\.0\.weight'):
    convert.load_torch('s3d_torchvision', state)


def test_rejects_missing_tensor(numpy_state_dict):
  state = dict(numpy_state_dict)
  # Mixed_4b, Branch_2's separable conv, temporal half's BN.
  del state['features.8.branch2.1.1.1.running_var']
  with pytest.raises(VidjaxError, match=r'missing .*features\.8\.branch2'
                     r'\.1\.1\.1\.running_var'):
    convert.load_torch('s3d_torchvision', state)


def test_rejects_wrong_shape(numpy_state_dict):
  state = dict(numpy_state_dict)
  state['features.2.0.weight'] = np.zeros((64, 64, 1, 3, 3), np.float32)
  with pytest.raises(VidjaxError,
                     match=r'shape mismatch.*features\.2\.0\.weight'):
    convert.load_torch('s3d_torchvision', state)


def run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'vidjax.convert', *args],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)


def test_cli_roundtrip(torch_model, converted, tmp_path):
  checkpoint = tmp_path / 's3d.pth'
  # Nested, as training scripts save it; the converter must unwrap it.
  torch.save({'state_dict': torch_model.state_dict(), 'epoch': 3},
             checkpoint)
  out = tmp_path / 'converted'
  proc = run_cli('--model=s3d_torchvision', f'--torch={checkpoint}',
                 f'--out={out}')
  assert proc.returncode == 0, proc.stderr
  name, num_classes, variables = convert.restore_converted(str(out))
  assert (name, num_classes) == ('s3d_torchvision', NUM_CLASSES)
  expected = mapping.flatten(converted[1])
  actual = mapping.flatten(variables)
  assert actual.keys() == expected.keys()
  for path, value in actual.items():
    assert isinstance(value, np.ndarray), path
    np.testing.assert_array_equal(value, expected[path], err_msg=str(path))


def test_cli_missing_checkpoint_is_one_line(tmp_path):
  proc = run_cli('--model=s3d_torchvision',
                 f'--torch={tmp_path}/no_such.pth', f'--out={tmp_path}/out')
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith('vidjax: error:'), proc.stderr
  assert 'no_such.pth' in lines[0]


def test_import_does_not_load_torch():
  # torch is only needed to read .pth files; a numpy state dict converts
  # without it, so importing the converter must not pull it in.
  code = ('import sys, vidjax.convert; '
          "sys.exit('torch' in sys.modules)")
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-c', code], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr or 'vidjax.convert imported torch'
