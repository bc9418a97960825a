"""python -m vidjax.explain: the files it writes and its one-line errors."""
import errno
import os

import flax.linen as nn
import jax
import numpy as np
from PIL import Image
import pytest

from tests.data import raw_video_fixtures as rv
from tests.inference import cli_runs
from tests.inference import workdirs
from tests.inference.test_explain_gradcam import he_normal
from vidjax.inference.explain import command
from vidjax.models import create_model
from vidjax.tools import files

SIZE = 16


def fast_variables(config, num_classes=len(workdirs.CLASS_NAMES), seed=0):
  """`workdirs.random_variables` without the eager init (shapes only)."""
  model = create_model(config.model_name, num_classes=num_classes,
                       **config.model.to_dict())
  clip = np.zeros((1, config.data.num_frames, SIZE, SIZE, 3), np.float32)
  shapes = nn.unbox(jax.eval_shape(
      lambda: model.init(jax.random.key(0), clip, train=False)))
  return model, he_normal(dict(shapes), seed)


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
  root = tmp_path_factory.mktemp('explain')
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(workdirs, 'random_variables', fast_variables)
    workdirs.write_workdir(root / 'tsn', workdirs.tiny_config(
        'tsn_r18', num_frames=2, crop_size=SIZE, width=8))
    workdirs.write_workdir(root / 'timesformer', workdirs.tiny_config(
        'timesformer', num_frames=2, crop_size=SIZE, embed_dim=16, depth=1,
        num_heads=2, patch_size=8, image_size=SIZE, drop_path_rate=0.0))
  video = rv.write_video(str(root / 'videos' / 'clip.mp4'), 12, 15.0)
  broken = root / 'videos' / 'broken.mp4'
  broken.write_bytes(b'not a video at all')
  return dict(tsn=root / 'tsn', timesformer=root / 'timesformer',
              video=video, broken=str(broken), root=root)


def run_cli(capfd, *args):
  return cli_runs.run_main(capfd, command.main, 'vidjax.explain', *args)


def test_gradcam_writes_the_grid_and_the_arrays(sources, capfd, tmp_path):
  out = tmp_path / 'out'
  code, stdout, err = run_cli(capfd, f'--checkpoint={sources["tsn"]}',
                              sources['video'], f'--out={out}', '--target=3')
  assert code == 0, err
  png, npz = out / 'clip.gradcam.png', out / 'clip.gradcam.npz'
  assert stdout.split() == [str(npz), str(png)]
  assert sorted(os.listdir(out)) == ['clip.gradcam.npz', 'clip.gradcam.png']
  with Image.open(png) as image:
    # One column of 1.6 in per frame, two rows: 3.6 in, at 100 dpi.
    assert image.format == 'PNG' and image.size == (2 * 160, 360)
  arrays = np.load(npz)
  assert arrays['map'].shape == (2, SIZE, SIZE)
  assert arrays['frames'].shape == (2, SIZE, SIZE, 3)
  assert 0 <= arrays['frames'].min() and arrays['frames'].max() <= 1
  assert arrays['class_index'] == 3 and arrays['class_name'] == 'class_3'
  assert str(arrays['layer']) == 'layer4'
  logits = arrays['logits'].astype(np.float64)
  softmax = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
  assert arrays['score'] == pytest.approx(softmax[3], rel=1e-6)
  assert str(arrays['method']) == 'gradcam'


def test_rollout_writes_a_gif_and_keeps_the_temporal_maps(sources, capfd,
                                                          tmp_path):
  code, _, err = run_cli(capfd, f'--checkpoint={sources["timesformer"]}',
                         sources['video'], f'--out={tmp_path}',
                         '--format=gif', '--target=class_1')
  assert code == 0, err
  with Image.open(tmp_path / 'clip.rollout.gif') as image:
    assert image.n_frames == 2 and image.size == (2 * SIZE, SIZE)
  arrays = np.load(tmp_path / 'clip.rollout.npz')
  assert arrays['cls_map'].shape == (2, 2, 2)       # T, h, w patches.
  assert arrays['temporal'].shape == (2, 2, 2, 2)   # h, w, T, T.
  assert arrays['cls_map'].sum() + arrays['cls_self'] == pytest.approx(1)
  # Each patch's rolled-out value on its 8x8 pixels.
  np.testing.assert_array_equal(
      arrays['map'], np.repeat(np.repeat(arrays['cls_map'], 8, 1), 8, 2)
      .astype(np.float32))
  assert arrays['class_index'] == 1 and str(arrays['method']) == 'rollout'


@pytest.mark.parametrize('source, flags, message', [
    ('tsn', ['--method=rollout'],
     'attention rollout needs a TimeSformer; TSM has no attention (use '
     '--method=gradcam)'),
    ('timesformer', ['--method=gradcam'],
     'Grad-CAM needs a convolutional model; TimeSformer has no conv feature '
     'maps (use --method=rollout)'),
    ('tsn', ['--layer=Mixed_5c'],
     "unknown layer 'Mixed_5c'; layers: layer1, layer2, layer3, layer4"),
    ('tsn', ['--target=jumping'],
     '--target=jumping is neither a class index (0..4) nor a class name of '
     'this checkpoint'),
    ('timesformer', ['--layer=attn'],
     '--layer is for Grad-CAM; rollout goes through every attention layer'),
    ('tsn', ['--view=9'],
     "--view=9 is not one of this checkpoint's views (0..0)"),
])
def test_bad_requests(sources, capfd, tmp_path, source, flags, message):
  # Refused before the video is read (the broken one would say so).
  code, out, err = run_cli(capfd, f'--checkpoint={sources[source]}',
                           sources['broken'], f'--out={tmp_path}', *flags)
  assert (code, out, err) == (1, '', f'vidjax: error: {message}\n')
  assert os.listdir(tmp_path) == []


def test_an_unreadable_video(sources, capfd, tmp_path):
  code, out, err = run_cli(capfd, f'--checkpoint={sources["tsn"]}',
                           sources['broken'], f'--out={tmp_path}')
  assert (code, out) == (1, '')
  assert err.startswith(f'vidjax: error: {sources["broken"]}')
  assert err.count('\n') == 1 and 'Traceback' not in err
  assert os.listdir(tmp_path) == []


def test_a_full_disk_leaves_no_file(sources, capfd, tmp_path, monkeypatch):
  # ENOSPC from the write's fsync (monkeypatched): one line, and neither a
  # temporary file nor a partial image stays in --out.
  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(files.os, 'fsync', full)
  code, out, err = run_cli(capfd, f'--checkpoint={sources["timesformer"]}',
                           sources['video'], f'--out={tmp_path}')
  npz = tmp_path / 'clip.rollout.npz'
  assert (code, out, err) == (
      1, '', f'vidjax: error: cannot write {npz}: No space left on device\n')
  assert os.listdir(tmp_path) == []
