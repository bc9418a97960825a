"""Named pipeline steps: crops, flips with label swaps, jitter, presets, and
replacing or removing steps by name."""
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data import records as R
from vidjax import config as config_lib
from vidjax.data import pipeline
from vidjax.data import transforms
from vidjax.errors import VidjaxError


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('steps'))
  R.write_shards(d, 'clips', [R.record(v, 12, v % 2) for v in range(6)], 2)
  return d


def _config(data_dir, **overrides):
  pattern = os.path.join(data_dir, 'clips-*')
  return R.data_config(pattern, pattern, num_classes=3, **overrides)


def _collect(ds, num_batches=None):
  if num_batches is not None:
    ds = ds.take(num_batches)
  batches = list(ds.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_three_crops_along_the_long_side():
  video = np.random.default_rng(0).random((2, 10, 16, 3)).astype(np.float32)
  crops = transforms.spatial_crops(tf.constant(video), 8, 3).numpy()
  # Landscape: x = 0, 4, 8; y centred at 1.
  for i, x in enumerate((0, 4, 8)):
    np.testing.assert_array_equal(crops[i], video[:, 1:9, x:x + 8])
  tall = video.transpose(0, 2, 1, 3)  # 16 x 10: y = 0, 4, 8; x = 1.
  crops = transforms.spatial_crops(tf.constant(tall), 8, 3).numpy()
  for i, y in enumerate((0, 4, 8)):
    np.testing.assert_array_equal(crops[i], tall[:, y:y + 8, 1:9])
  one = transforms.spatial_crops(tf.constant(video), 8, 1).numpy()
  np.testing.assert_array_equal(one[0], video[:, 1:9, 4:12])


def test_multi_scale_crop_windows_match_tsn():
  # 256 x 340 frame, output 224: sides int(256 * s) = 256, 224, 192, 168.
  sides = [256, 224, 192, 168]
  allowed = {(sides[j], sides[i]) for i in range(4) for j in range(4)
             if abs(i - j) <= 1}  # (h, w)
  seen_sizes, seen_pos = set(), set()
  for i in range(600):
    y, x, h, w = transforms.multi_scale_crop_window(
        tf.constant([256, 340, 3]), tf.constant([i, 7]), 224).numpy()
    assert (h, w) in allowed
    w_step, h_step = (340 - w) // 4, (256 - h) // 4
    assert x % max(w_step, 1) == 0 and y % max(h_step, 1) == 0
    pos = (x // max(w_step, 1), y // max(h_step, 1))
    assert pos in {(0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2),
                   (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3)} or (
                       w_step == 0 or h_step == 0)
    seen_sizes.add((h, w))
    if w_step and h_step:
      seen_pos.add(pos)
  assert seen_sizes == allowed and len(seen_pos) == 13


def test_fixed_random_crop_window():
  for i in range(30):
    y, x, h, w = transforms.random_fixed_crop_window(
        tf.constant([256, 340, 3]), tf.constant([i, 1]), 224).numpy()
    assert (h, w) == (224, 224) and 0 <= y <= 32 and 0 <= x <= 116
  # Smaller than the crop: the whole side.
  assert transforms.random_fixed_crop_window(
      tf.constant([100, 340, 3]), tf.constant([0, 1]), 224).numpy()[
          [0, 2]].tolist() == [0, 100]


def test_label_swap_table():
  table = transforms.label_swap_table({0: 1, 3: 4}, 6).numpy()
  assert table.tolist() == [1, 0, 2, 4, 3, 5]
  with pytest.raises(ValueError, match='outside'):
    transforms.label_swap_table({0: 9}, 6)
  with pytest.raises(ValueError, match='both'):
    transforms.label_swap_table({0: 1, 1: 2}, 6)


def _is_mirrored(video):
  """The dark quarter of the test frames sits on the right."""
  return video[..., :, -2:, 0].mean() < video[..., :, :2, 0].mean()


def test_flip_swaps_left_right_classes(data_dir):
  whole = dict(train_area_range=(1.0, 1.0), train_aspect_range=(4 / 3, 4 / 3))
  plain = _collect(pipeline.build_dataset(
      _config(data_dir, **whole), 'train', train=True, batch_size=6), 4)
  assert not any(_is_mirrored(v) for v in plain['video'])
  out = _collect(pipeline.build_dataset(
      _config(data_dir, horizontal_flip=True, flip_label_map={0: 1}, **whole),
      'train', train=True, batch_size=6), 4)
  flipped = np.array([_is_mirrored(v) for v in out['video']])
  assert 0 < flipped.sum() < len(flipped)
  # Same records in the same order: only the flip changed the labels.
  np.testing.assert_array_equal(
      out['label'], np.where(flipped, 1 - plain['label'], plain['label']))
  np.testing.assert_array_equal(
      out['video'][~flipped], plain['video'][~flipped])


def test_time_reversal_reverses_every_view(data_dir):
  cfg = dict(num_test_clips=2, num_test_crops=3)
  fwd = _collect(pipeline.build_dataset(
      _config(data_dir, **cfg), 'validation', train=False, batch_size=36))
  rev = _collect(pipeline.build_dataset(
      _config(data_dir, reverse_time=True, **cfg), 'validation', train=False,
      batch_size=36))
  np.testing.assert_array_equal(rev['video'], fwd['video'][:, ::-1])
  np.testing.assert_array_equal(rev['view_index'], fwd['view_index'])


def test_segment_sampling_step(data_dir):
  steps = tuple('sample_segments' if s == 'sample_dense' else s
                for s in config_lib.DEFAULT_EVAL_STEPS)
  out = _collect(pipeline.build_dataset(
      _config(data_dir, eval_steps=steps), 'validation', train=False,
      batch_size=6))
  # 12 frames, 4 segments, tick 3: int(1.5 + 3 i) = 1, 4, 7, 10.
  video = out['video'][out['video_index'] == 0][0]
  v = 0  # Shard 0 holds records 0, 2, 4: the first in the split is video 0.
  np.testing.assert_allclose(
      video[:, 8, 12, 0], [R.frame_level(v, t) / 255 for t in (1, 4, 7, 10)],
      atol=3 / 255)


def test_train_crop_variants_give_the_clip_shape(data_dir):
  for crop in ('crop_random', 'crop_multi_scale', 'crop_random_resized'):
    steps = tuple(crop if s == 'crop_random_resized' else s
                  for s in config_lib.DEFAULT_TRAIN_STEPS)
    ds = pipeline.build_dataset(_config(data_dir, train_steps=steps),
                                'train', train=True, batch_size=2)
    assert next(ds.as_numpy_iterator())['video'].shape == (2, 4, 16, 16, 3)


def test_remove_and_replace_steps_by_name(data_dir, monkeypatch):
  # Without 'normalize' the clip stays in [0, 255].
  steps = tuple(s for s in config_lib.DEFAULT_EVAL_STEPS if s != 'normalize')
  raw = _collect(pipeline.build_dataset(
      _config(data_dir, eval_steps=steps), 'validation', train=False,
      batch_size=6))
  assert raw['video'].max() > 50

  monkeypatch.setattr(pipeline, 'STEPS', dict(pipeline.STEPS))  # Undone after.

  @pipeline.register_step('test_first_frames')
  def first_frames(features, ctx):
    frames = features['frames'][: ctx.config.num_frames]
    return {**features, 'frames': frames, 'padded': tf.constant(False)}

  steps = tuple('test_first_frames' if s == 'sample_dense' else s
                for s in steps)
  out = _collect(pipeline.build_dataset(
      _config(data_dir, eval_steps=steps), 'validation', train=False,
      batch_size=6))
  video = out['video'][out['video_index'] == 0][0]
  np.testing.assert_allclose(
      video[:, 8, 12, 0], [R.frame_level(0, t) for t in range(4)], atol=3)
  with pytest.raises(VidjaxError, match="unknown pipeline step.*'nope'"):
    pipeline.build_dataset(_config(data_dir, eval_steps=('parse', 'nope')),
                           'validation', train=False, batch_size=2)


def test_normalization_presets(data_dir):
  video = tf.constant([[[[0, 255, 0]]]], tf.uint8)
  mean, std = transforms.NORMALIZATION['inception']
  np.testing.assert_allclose(transforms.normalize(video, mean, std),
                             [[[[-1, 1, -1]]]])
  c = _config(data_dir, normalization='inception')
  assert pipeline.normalization(c) == transforms.NORMALIZATION['inception']
  c.mean, c.std = (0.1, 0.2, 0.3), (1.0, 1.0, 1.0)  # Explicit wins.
  assert pipeline.normalization(c)[0] == (0.1, 0.2, 0.3)
  with pytest.raises(VidjaxError, match='unknown normalization'):
    pipeline.build_dataset(_config(data_dir, normalization='imagnet'),
                           'train', train=True, batch_size=2)


def test_color_jitter():
  video = tf.random.stateless_uniform([3, 8, 8, 3], [1, 2]) * 255
  a = transforms.color_jitter(video, tf.constant([5, 6]), 0.4).numpy()
  b = transforms.color_jitter(video, tf.constant([5, 6]), 0.4).numpy()
  c = transforms.color_jitter(video, tf.constant([7, 6]), 0.4).numpy()
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c) and not np.allclose(a, video.numpy())
  assert a.min() >= 0 and a.max() <= 255
  same = transforms.color_jitter(video, tf.constant([5, 6]), 0.0).numpy()
  np.testing.assert_allclose(same, video.numpy(), atol=1e-3)
