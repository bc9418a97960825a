"""python -m vidjax.features end to end: a checkpoint, real video files."""
import json
import os

import jax
import numpy as np
import pytest

from tests.data import raw_video_fixtures as rv
from tests.inference import workdirs
from vidjax.inference import features
from vidjax.inference import loader
from vidjax.inference import video_input


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp('features')
  config = workdirs.tiny_config(
      'timesformer', 2, 16, embed_dim=16, depth=2, num_heads=2, patch_size=8,
      image_size=16, kernels='plain')
  config.data.num_test_clips, config.data.num_test_crops = 2, 3
  workdirs.write_workdir(str(root / 'wd'), config, preparation={
      'fps': 10.0, 'short_side': 20, 'jpeg_quality': 90})
  # 2 s and 3 s at 15 fps (10 fps after preparation's resampling).
  rv.write_video(str(root / 'videos' / 'a.mp4'), 30, 15.0)
  rv.write_video(str(root / 'videos' / 'sub' / 'b.mp4'), 45, 15.0)
  (root / 'videos' / 'broken.mp4').write_bytes(b'not a video' * 50)
  return root


def run(argv):
  """main's return value, or the SystemExit code of an error."""
  try:
    return features.main(['features', *argv])
  except SystemExit as e:
    return e.code


def test_folder_features_are_the_models(setup, capsys):
  root = setup
  out = root / 'out'
  code = run([f'--checkpoint={root}/wd', f'--out={out}', '--window_s=1',
              str(root / 'videos')])
  captured = capsys.readouterr()
  assert code == 0
  assert captured.out.splitlines()[-1] == (
      f'2 videos extracted, 0 done before, 1 failed -> {out}')
  assert f'{root}/videos/broken.mp4: FAILED: cannot open' in captured.err
  assert sorted(os.listdir(out)) == ['a.npz', 'manifest.json', 'sub']
  manifest = json.loads((out / 'manifest.json').read_text())
  assert sorted(manifest['videos']) == ['a', 'sub/b']
  assert list(manifest['failed']) == [f'{root}/videos/broken.mp4']
  assert manifest['feature_shape'] == [16]

  # The pre-logits of each window: the model's own features
  # (return_features=True) on the window's views, averaged over the views.
  loaded = loader.load(str(root / 'wd'))
  apply = jax.jit(lambda v, x: loaded.model.apply(
      v, x, train=False, return_features=True)[1]['features'])
  with video_input.VideoReader(root / 'videos' / 'sub' / 'b.mp4',
                               loaded.contract) as reader:
    windows = list(video_input.windows(reader, loaded.contract, window_s=1))
  want = np.stack([np.asarray(apply(loaded.variables, w.views)).mean(0)
                   for w in windows])
  with np.load(out / 'sub' / 'b.npz') as z:
    assert z['features'].shape == (3, 16)
    np.testing.assert_allclose(z['features'], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(z['start_s'], [0, 1, 2])
    np.testing.assert_allclose(z['end_s'], [1, 2, 3])
    assert json.loads(z['manifest'].item())['settings'][
        'checkpoint_fingerprint'] == loaded.fingerprint

  # Again: nothing computed, the same files.
  mtime = os.stat(out / 'a.npz').st_mtime_ns
  assert run([f'--checkpoint={root}/wd', f'--out={out}', '--window_s=1',
              str(root / 'videos')]) == 0
  assert capsys.readouterr().out.splitlines()[-1] == (
      f'0 videos extracted, 2 done before, 1 failed -> {out}')
  assert os.stat(out / 'a.npz').st_mtime_ns == mtime


def test_per_view_activations(setup, capsys):
  """--views=all --pool=none: every view's activation as is."""
  root = setup
  out = root / 'views'
  assert run([f'--checkpoint={root}/wd', f'--out={out}', '--views=all',
              '--pool=none', '--layer=blocks_0/patches',
              str(root / 'videos' / 'a.mp4')]) == 0
  capsys.readouterr()
  manifest = json.loads((out / 'manifest.json').read_text())
  # 6 views (2 clips x 3 crops) of 2 frames x 2x2 patches x 16 channels.
  assert manifest['feature_shape'] == [6, 2, 4, 16]
  assert (manifest['settings']['views'], manifest['settings']['pool']) == (
      'all', 'none')
  with np.load(out / 'a.npz') as z:
    assert z['features'].shape == (1, 6, 2, 4, 16)
    np.testing.assert_allclose(z['end_s'], [2.0])  # One window: the video.


def test_bad_input_is_one_line(setup, capsys):
  root = setup
  assert run([f'--checkpoint={root}/wd', f'--out={root}/x', '--layer=blocks_9',
              str(root / 'videos')]) == 1
  assert capsys.readouterr().err == (
      "vidjax: error: unknown layer 'blocks_9' for model timesformer; its "
      'layers: patch_embed, blocks_0/cls, blocks_0/patches, blocks_1/cls, '
      'blocks_1/patches, patches, norm, features, prelogits, logits\n')
  assert not os.path.exists(root / 'x')
  assert run([f'--checkpoint={root}/wd', f'--out={root}/x',
              str(root / 'videos' / 'broken.mp4')]) == 1
  err = capsys.readouterr().err.splitlines()
  assert err[-1].startswith(
      'vidjax: error: no features extracted: 1 videos failed (first: '
      f'{root}/videos/broken.mp4: cannot open')
  assert run([f'--checkpoint={root}/wd', '--list_layers']) == 0
  assert capsys.readouterr().out.splitlines()[-3:] == [
      'features  [16]', 'prelogits  [16]', 'logits  [5]']
