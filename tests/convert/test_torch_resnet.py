"""ResNet checkpoints → vidjax TSN/TSM: torchvision, official TSM and
mmaction2 layouts, logit parity against a PyTorch TSM written here, and
strict bookkeeping with one clear error per bad checkpoint."""
import functools
import re

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
from vidjax.convert import torch_resnet
from vidjax.models import create_model
from vidjax.models import resnet
from vidjax.train import init_from
from tests.convert import torch_reference

NUM_CLASSES = 7
SEGMENTS = 4
SIZE = 64  # Global average pooling: ResNets run at any size.
TOLERANCE = 1e-4  # ||vidjax − torch|| / ||torch||, float32.


# -----------------------------------------------------------------------------
# The PyTorch reference: torchvision ResNet + the official TSM wrappers
# (mit-han-lab/temporal-shift-module ops/temporal_shift.py, ops/models.py).
# -----------------------------------------------------------------------------


class TemporalShift(torch.nn.Module):
  """The official shift on (N·T, C, H, W), then `net` (hence the `.net`)."""

  def __init__(self, net, segments, fold_div=8):
    super().__init__()
    self.net = net
    self.segments = segments
    self.fold_div = fold_div
    self.enabled = True

  def forward(self, x):
    if not self.enabled:
      return self.net(x)
    nt, c, h, w = x.size()
    x = x.view(nt // self.segments, self.segments, c, h, w)
    fold = c // self.fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]  # Shift left: from frame t + 1.
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]  # From t − 1.
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return self.net(out.view(nt, c, h, w))


class TemporalPool(torch.nn.Module):
  """The official TemporalPool: max over time (3, stride 2, pad 1), then net."""

  def __init__(self, net, segments):
    super().__init__()
    self.net = net
    self.segments = segments

  def forward(self, x):
    nt, c, h, w = x.size()
    x = x.view(nt // self.segments, self.segments, c, h, w).transpose(1, 2)
    x = torch.nn.functional.max_pool3d(x, kernel_size=(3, 1, 1),
                                       stride=(2, 1, 1), padding=(1, 0, 0))
    x = x.transpose(1, 2).contiguous().view(nt // 2, c, h, w)
    return self.net(x)


class TSNReference(torch.nn.Module):
  """The official TSN wrapper: base_model (fc → dropout), new_fc, mean over T.

  place: None (TSN), 'blockres' (shift conv1 of every n_round-th block) or
  'block' (wrap every block), as `make_temporal_shift`.
  """

  def __init__(self, arch, place, temporal_pool=False):
    super().__init__()
    base = getattr(torchvision.models, arch)(weights=None)
    features = base.fc.in_features
    base.fc = torch.nn.Dropout(0.5)
    segments = [SEGMENTS] + [SEGMENTS // 2 if temporal_pool else SEGMENTS] * 3
    n_round = 2 if len(base.layer3) >= 23 else 1
    for s in range(4):
      layer = getattr(base, f'layer{s + 1}')
      for i, block in enumerate(layer):
        if place == 'block':
          layer[i] = TemporalShift(block, segments[s])
        elif place == 'blockres' and i % n_round == 0:
          block.conv1 = TemporalShift(block.conv1, segments[s])
    if temporal_pool:
      base.layer2 = TemporalPool(base.layer2, SEGMENTS)
    self.base_model = base
    self.new_fc = torch.nn.Linear(features, NUM_CLASSES)
    self.out_segments = segments[-1]

  def forward(self, x):
    logits = self.new_fc(self.base_model(x))
    return logits.view(-1, self.out_segments, logits.shape[-1]).mean(1)

  def set_shift(self, enabled):
    for m in self.modules():
      if isinstance(m, TemporalShift):
        m.enabled = enabled


def build_reference(arch, place, temporal_pool=False, seed=0):
  torch.manual_seed(seed)
  model = TSNReference(arch, place, temporal_pool)
  torch_reference.randomise_batch_norm(
      model, lambda m: m(torch.randn(2 * SEGMENTS, 3, SIZE, SIZE)))
  return model


def official_checkpoint(model):
  """What the official main.py saves: DataParallel keys under 'state_dict'."""
  return {'epoch': 50, 'arch': 'resnet50', 'best_prec1': 74.1,
          'state_dict': {'module.' + k: v
                         for k, v in model.state_dict().items()}}


def mmaction2_key(official_key):
  """An official TSM key → mmaction2's ResNetTSM / TSMHead key."""
  key = official_key.removeprefix('module.')
  if key.startswith('new_fc.'):
    return 'cls_head.fc_cls.' + key.removeprefix('new_fc.')
  assert key.startswith('base_model.'), key
  key = 'backbone.' + key.removeprefix('base_model.')
  # The stem and every block conv are mmcv ConvModules: conv + bn.
  key = re.sub(r'^backbone\.conv1\.', 'backbone.conv1.conv.', key)
  key = re.sub(r'^backbone\.bn1\.', 'backbone.conv1.bn.', key)
  if key.startswith('backbone.layer'):
    key = re.sub(r'\.conv(\d)\.', r'.conv\1.conv.', key)
    key = re.sub(r'\.bn(\d)\.', r'.conv\1.bn.', key)
    key = key.replace('.downsample.0.', '.downsample.conv.')
    key = key.replace('.downsample.1.', '.downsample.bn.')
  return key


def mmaction2_checkpoint(model):
  """What mmaction2 saves: bare keys under 'state_dict', with 'meta'."""
  state = official_checkpoint(model)['state_dict']
  return {'meta': {'mmaction2_version': '1.2.0'},
          'state_dict': {mmaction2_key(k): v for k, v in state.items()}}


def numpy_state(state):
  return {k: v.numpy() for k, v in state.items()}


def random_clip(batch, segments=SEGMENTS, height=SIZE, width=SIZE, seed=1):
  """(N·T, 3, H, W) torch frames, batch-major as TSN feeds them."""
  generator = torch.Generator().manual_seed(seed)
  return torch.randn(batch * segments, 3, height, width, generator=generator)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, variables, video):
  return model.apply(variables, video, train=False)


def run_vidjax(model, variables, frames, segments):
  """vidjax logits of torch frames (N·T, 3, H, W), fed as NTHWC."""
  nt, c, h, w = frames.shape
  video = frames.numpy().reshape(nt // segments, segments, c, h, w)
  return np.asarray(_apply(model, variables,
                           jnp.asarray(video.transpose(0, 1, 3, 4, 2))))


def reference_logits(model, frames):
  with torch.no_grad():
    return model(frames).numpy()


def assert_same_variables(actual, expected):
  actual, expected = mapping.flatten(actual), mapping.flatten(expected)
  assert actual.keys() == expected.keys()
  for path, value in actual.items():
    assert value.dtype == np.float32, path
    np.testing.assert_array_equal(value, expected[path], err_msg=str(path))


def key_only_state(arch, rename=lambda k: k):
  """Every key of torchvision `arch` with a stand-in tensor of the right rank.

  Structural checks (family, depth, placement) run before any tensor is
  read, so these need no weights; built on the meta device, for free.
  """
  with torch.device('meta'):
    model = getattr(torchvision.models, arch)(weights=None)
  return {rename(k): np.zeros((1,) * len(v.shape), np.float32)
          for k, v in model.state_dict().items()}


# -----------------------------------------------------------------------------
# Fixtures (module scope: each torch model is built and converted once).
# -----------------------------------------------------------------------------


def _torchvision(arch):
  torch.manual_seed(0)
  model = getattr(torchvision.models, arch)(weights=None)
  torch_reference.randomise_batch_norm(
      model, lambda m: m(torch.randn(4, 3, SIZE, SIZE)))
  return model


@pytest.fixture(scope='module')
def torchvision_r50():
  return _torchvision('resnet50')


@pytest.fixture(scope='module')
def tsm_r50():
  return build_reference('resnet50', 'blockres')


@pytest.fixture(scope='module')
def tsm_r50_official(tsm_r50, tmp_path_factory):
  path = tmp_path_factory.mktemp('official') / 'tsm_r50.pth.tar'
  torch.save(official_checkpoint(tsm_r50), path)
  return convert.load_torch('tsm_r50', str(path))


@pytest.fixture(scope='module')
def tsm_r18():
  return build_reference('resnet18', 'blockres')


@pytest.fixture(scope='module')
def tsm_r18_state(tsm_r18):
  """Its official keys (base_model.*, new_fc.*) as numpy, for the cheap
  bookkeeping tests."""
  return numpy_state(tsm_r18.state_dict())


# -----------------------------------------------------------------------------
# Parity.
# -----------------------------------------------------------------------------


# 72×56 frames: odd sizes from layer2 on (9×7, 5×4, 3×2), where a stride-2
# conv's padding and rounding matter.
@pytest.mark.parametrize('arch,name', [('resnet50', 'tsn_r50'),
                                       ('resnet18', 'tsn_r18')])
def test_torchvision_one_frame_matches(arch, name, torchvision_r50):
  model_torch = torchvision_r50 if arch == 'resnet50' else _torchvision(arch)
  model, variables = convert.load_torch(name, model_torch.state_dict())
  assert (model.num_classes, model.shift) == (1000, 'none')
  frames = random_clip(2, segments=1, height=72, width=56)
  logits = run_vidjax(model, variables, frames, segments=1)
  reference = reference_logits(model_torch, frames)
  assert logits.shape == (2, 1000)
  assert torch_reference.relative_error(logits, reference) <= TOLERANCE


def test_torchvision_initialises_tsm(torchvision_r50):
  # ImageNet weights start any model of the family: the same variables.
  state = numpy_state(torchvision_r50.state_dict())
  tsn, tsn_variables = convert.load_torch('tsn_r50', state)
  tsm, tsm_variables = convert.load_torch('tsm_r50', state)
  assert (tsn.shift, tsm.shift, tsm.placement) == ('none', 'bidirectional',
                                                   'residual')
  assert_same_variables(tsm_variables, tsn_variables)


def test_official_blockres_matches(tsm_r50, tsm_r50_official):
  model, variables = tsm_r50_official
  assert (model.depth, model.num_classes, model.placement, model.shift,
          model.temporal_pool) == (50, NUM_CLASSES, 'residual',
                                   'bidirectional', False)
  frames = random_clip(2)
  logits = run_vidjax(model, variables, frames, SEGMENTS)
  reference = reference_logits(tsm_r50, frames)
  assert logits.shape == (2, NUM_CLASSES)
  assert torch_reference.relative_error(logits, reference) <= TOLERANCE
  # The shift matters on this clip: parity with an unshifted vidjax model
  # would fail.
  tsm_r50.set_shift(False)
  try:
    unshifted = reference_logits(tsm_r50, frames)
  finally:
    tsm_r50.set_shift(True)
  assert torch_reference.relative_error(unshifted, reference) > 100 * TOLERANCE


def test_mmaction2_blockres_matches(tsm_r50, tsm_r50_official, tmp_path):
  path = tmp_path / 'tsm_r50_mmaction2.pth'
  checkpoint = mmaction2_checkpoint(tsm_r50)
  assert 'backbone.layer1.0.conv1.conv.net.weight' in checkpoint['state_dict']
  torch.save(checkpoint, path)
  model, variables = convert.load_torch('tsm_r50', str(path))
  assert model == tsm_r50_official[0]
  frames = random_clip(2, seed=2)  # The official test's shape: compiled.
  logits = run_vidjax(model, variables, frames, SEGMENTS)
  assert torch_reference.relative_error(
      logits, reference_logits(tsm_r50, frames)) <= TOLERANCE
  assert_same_variables(variables, tsm_r50_official[1])


def test_official_block_placement_with_temporal_pool_matches(tmp_path):
  # Both wrappers at once (one compilation): TemporalPool around layer2,
  # TemporalShift around every block, with T/2 segments from layer2 on.
  reference = build_reference('resnet18', 'block', temporal_pool=True)
  checkpoint = official_checkpoint(reference)
  assert 'module.base_model.layer1.0.net.conv1.weight' in (
      checkpoint['state_dict'])
  assert 'module.base_model.layer2.net.0.net.conv1.weight' in (
      checkpoint['state_dict'])
  path = tmp_path / 'tsm_r18_block.pth'
  torch.save(checkpoint, path)
  model, variables = convert.load_torch('tsm_r18', str(path))
  assert (model.depth, model.placement, model.temporal_pool) == (
      18, 'in_place', True)
  frames = random_clip(2)
  logits = run_vidjax(model, variables, frames, SEGMENTS)
  reference_out = reference_logits(reference, frames)
  assert torch_reference.relative_error(logits, reference_out) <= TOLERANCE
  # The shifted blocks see it: not the unshifted model's logits.
  reference.set_shift(False)
  unshifted = reference_logits(reference, frames)
  assert torch_reference.relative_error(unshifted,
                                        reference_out) > 100 * TOLERANCE
  # mmaction2 wraps the same way: layer2.net.0.net.conv1.conv.*.
  mm_state = mmaction2_checkpoint(reference)['state_dict']
  assert 'backbone.layer2.net.0.net.conv1.conv.weight' in mm_state
  mm_model, mm_variables = convert.load_torch('tsm_r18', mm_state)
  assert mm_model == model
  assert_same_variables(mm_variables, variables)

  # The structure travels with the weights: `python -m vidjax.convert`
  # records it, and a model built without it is refused.
  options = convert.model_options('tsm_r18', model)
  assert options == {'placement': 'in_place', 'temporal_pool': True}
  out = convert.save_converted(str(tmp_path / 'out'), 'tsm_r18',
                               model.num_classes, variables, options=options)
  assert convert.converted_options(out) == options
  convert.check_options(out, model)
  plain = create_model('tsm_r18', num_classes=model.num_classes)
  with pytest.raises(VidjaxError, match=r"placement='in_place', "
                     r"temporal_pool=True but the config builds "
                     r"placement='residual', temporal_pool=False; pass "
                     r'--config.model.placement=in_place '
                     r'--config.model.temporal_pool=True'):
    convert.check_options(out, plain)
  with pytest.raises(VidjaxError, match='--config.model.placement=in_place'):
    init_from.load(out, 'tsm_r18', variables, model=plain)


# -----------------------------------------------------------------------------
# Bookkeeping: every tensor consumed, every variable filled.
# -----------------------------------------------------------------------------


def test_numpy_state_dict_converts_like_tensors(tsm_r18, tsm_r18_state):
  model, variables = convert.load_torch('tsm_r18', tsm_r18_state)
  tensors = official_checkpoint(tsm_r18)
  expected_model, expected = convert.load_torch('tsm_r18', tensors)
  assert model == expected_model
  assert_same_variables(variables, expected)
  # Every BN's step counter is in the checkpoint and consumed silently.
  assert any(k.endswith('num_batches_tracked') for k in tsm_r18_state)


def test_online_model_takes_offline_layout(tsm_r18_state):
  # The shift direction is not in a checkpoint: the online model converts.
  _, expected = convert.load_torch('tsm_r18', tsm_r18_state)
  model, variables = convert.load_torch('tsm_online_r18', tsm_r18_state)
  assert (model.shift, model.placement) == ('right', 'residual')
  assert_same_variables(variables, expected)


def test_dropout_zero_head(tsm_r18_state):
  # Trained with dropout 0, the official TSN keeps torchvision's fc.
  state = {k.replace('new_fc.', 'base_model.fc.'): v
           for k, v in tsm_r18_state.items()}
  _, expected = convert.load_torch('tsm_r18', tsm_r18_state)
  _, variables = convert.load_torch('tsm_r18', state)
  assert_same_variables(variables, expected)


def test_rejects_unused_tensors(tsm_r18_state):
  state = dict(tsm_r18_state)
  state['base_model.layer1.0.se.fc.weight'] = np.zeros((4, 64), np.float32)
  # A step counter of no BN the model has is not ignored either.
  state['base_model.layer1.0.bn4.num_batches_tracked'] = np.zeros(())
  with pytest.raises(VidjaxError) as error:
    convert.load_torch('tsm_r18', state)
  message = str(error.value)
  assert re.search(r'2 unexpected tensor\(s\)', message), message
  assert 'base_model.layer1.0.se.fc.weight' in message
  assert 'base_model.layer1.0.bn4.num_batches_tracked' in message


def test_rejects_missing_tensor(tsm_r18_state):
  state = dict(tsm_r18_state)
  del state['base_model.layer3.1.bn2.running_var']
  with pytest.raises(VidjaxError,
                     match=r'missing .*base_model\.layer3\.1\.bn2\.running_var'):
    convert.load_torch('tsm_r18', state)


def test_rejects_missing_shifted_conv(tsm_r18_state):
  # Without its weight, layer2.0 no longer reads as shifted: not official.
  state = dict(tsm_r18_state)
  del state['base_model.layer2.0.conv1.net.weight']
  with pytest.raises(VidjaxError,
                     match=r'should be shifted but are not: layer2\.0$'):
    convert.load_torch('tsm_r18', state)


def test_rejects_wrong_shape(tsm_r18_state):
  state = dict(tsm_r18_state)
  state['base_model.layer4.1.conv2.weight'] = np.zeros((512, 512, 1, 1),
                                                       np.float32)
  with pytest.raises(VidjaxError,
                     match=r'shape mismatch.*base_model\.layer4\.1\.conv2'):
    convert.load_torch('tsm_r18', state)


# -----------------------------------------------------------------------------
# Wrong checkpoint for the model: depth, TSN vs TSM, family, placement.
# -----------------------------------------------------------------------------


def test_rejects_wrong_depth(tsm_r18_state):
  with pytest.raises(VidjaxError,
                     match=r'official TSM checkpoint is a ResNet-18, model '
                     r'tsm_r50 is a ResNet-50; convert it as tsm_r18'):
    convert.load_torch('tsm_r50', tsm_r18_state)
  with pytest.raises(VidjaxError,
                     match=r'torchvision ResNet checkpoint is a ResNet-101, '
                     r'model tsn_r50 is a ResNet-50'):
    convert.load_torch('tsn_r50', key_only_state('resnet101'))


def test_rejects_tsm_checkpoint_for_tsn(tsm_r18_state):
  with pytest.raises(VidjaxError,
                     match=r"is a TSM .*'blockres'.*model tsn_r18 is a TSN"):
    convert.load_torch('tsn_r18', tsm_r18_state)


def test_rejects_tsn_checkpoint_for_tsm():
  tsn = numpy_state(official_checkpoint(
      TSNReference('resnet18', place=None))['state_dict'])
  with pytest.raises(VidjaxError, match=r'is a TSN .*convert it as tsn_r18'):
    convert.load_torch('tsm_r18', tsn)
  model, _ = convert.load_torch('tsn_r18', tsn)
  assert (model.shift, model.num_classes) == ('none', NUM_CLASSES)


def test_rejects_other_families():
  with torch.device('meta'):
    s3d = torchvision.models.video.s3d()
  s3d_keys = {k: np.zeros((1,)) for k in s3d.state_dict()}
  with pytest.raises(VidjaxError, match=r'not a ResNet checkpoint'):
    convert.load_torch('tsm_r50', s3d_keys)
  # mmaction2's 3D ResNets (I3D, SlowOnly) share the 2D key names.
  i3d = {k: np.zeros((1,) * 5 if k.endswith('conv.weight') else (1,))
         for k in key_only_state(
             'resnet50', lambda k: mmaction2_key('base_model.' + k))}
  with pytest.raises(VidjaxError, match=r'5-D: a 3D ResNet'):
    convert.load_torch('tsm_r50', i3d)
  # A ResNet of a depth vidjax does not build.
  with pytest.raises(VidjaxError, match=r'bottleneck blocks \(3, 8, 36, 3\)'):
    convert.load_torch('tsn_r50', key_only_state('resnet152'))


def _official_r101(shifted, place='blockres'):
  """Official-layout R101 keys with `shifted` (stage, block)s wrapped."""
  def rename(key):
    match = re.match(r'layer(\d)\.(\d+)\.(.*)', key)
    if match and (int(match[1]) - 1, int(match[2])) in shifted:
      stage, block, rest = match.groups()
      if place == 'block':
        key = f'layer{stage}.{block}.net.{rest}'
      elif rest.startswith('conv1.'):
        key = f'layer{stage}.{block}.conv1.net.{rest[len("conv1."):]}'
    return ('new_fc.' + key[3:] if key.startswith('fc.')
            else 'base_model.' + key)
  return key_only_state('resnet101', rename)


def test_resnet101_shifts_every_second_block():
  official = set(resnet.shifted_blocks(101))
  everything = {(s, b) for s, n in enumerate((3, 4, 23, 3))
                for b in range(n)}
  assert len(official) == 2 + 2 + 12 + 2  # Every second block of each stage.
  structure = torch_resnet.read_structure(_official_r101(official))
  assert (structure.depth, structure.placement) == (101, 'residual')
  assert structure.shifted == official
  with pytest.raises(VidjaxError,
                     match=r'shifted but should not be: layer1\.1, layer2\.1,'
                     r' layer2\.3, layer3\.1, .*; should be shifted but are '
                     r'not: none$'):
    convert.load_torch('tsm_r101', _official_r101(everything))


def test_resnet101_block_placement_wraps_every_block():
  # The official 'block' placement wraps every block, also in ResNet-101
  # (n_round = 2 is blockres's rule only), and so does vidjax's in_place.
  everything = {(s, b) for s, n in enumerate((3, 4, 23, 3))
                for b in range(n)}
  assert set(resnet.shifted_blocks(101, 'in_place')) == everything
  structure = torch_resnet.read_structure(_official_r101(everything, 'block'))
  assert (structure.depth, structure.placement) == (101, 'in_place')
  assert structure.shifted == everything
  with pytest.raises(VidjaxError, match='should be shifted but are not: '
                     r'layer1\.1'):
    convert.load_torch('tsm_r101', _official_r101(
        set(resnet.shifted_blocks(101)), 'block'))


def test_rejects_mixed_placements(tsm_r18_state):
  # layer4.1 (shifted at conv1) also wrapped whole.
  state = {k.replace('base_model.layer4.1.bn1.',
                     'base_model.layer4.1.net.bn1.'): v
           for k, v in tsm_r18_state.items()}
  with pytest.raises(VidjaxError, match=r'mixes shift placements'):
    convert.load_torch('tsm_r18', state)


def test_every_family_name_is_convertible():
  names = set(convert.convertible_models())
  for depth in resnet.DEPTHS:
    assert {f'tsn_r{depth}', f'tsm_r{depth}',
            f'tsm_online_r{depth}'} <= names
  assert 's3d_torchvision' in names
