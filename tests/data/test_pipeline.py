"""The tf.data pipeline: shapes, exact evaluation, determinism, resuming."""

import io
import math
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from vidjax import config as config_lib
from vidjax.data import pipeline
from vidjax.data import sources
from vidjax.data import transforms
from vidjax.errors import VidjaxError

MEAN = (0.1, 0.2, 0.3)
STD = (0.5, 0.25, 0.2)
# The tiny config: 8 frames of 32x32; 52 train / 26 validation clips.
NUM_TRAIN, NUM_VAL = 52, 26


def _config(data_dir, **overrides):
  c = config_lib.default_config().data
  c.name = 'moving_shapes/tiny'
  c.data_dir = str(data_dir)
  c.num_frames = 4
  c.frame_stride = 2
  c.crop_size = 24
  c.shuffle_buffer = 16
  c.mean = MEAN
  c.std = STD
  c.update(overrides)
  return c


# Settings under which preprocessing leaves 32x32 frames untouched, so outputs
# can be matched pixel for pixel against an independent decode.
IDENTITY = dict(
    crop_size=32,
    eval_resize_ratio=1.0,
    train_area_range=(1.0, 1.0),
    train_aspect_range=(1.0, 1.0),
)


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp('tfds')
  assert sources.prepare(_config(path))  # Renders `tiny`, once.
  assert not sources.prepare(_config(path))
  meta = pipeline.dataset_info(_config(path))
  assert os.path.exists(os.path.join(meta.data_dir, 'dataset_info.json'))
  return path


def _reference(data_dir, split):
  """(labels, uint8 [N, 8, 32, 32, 3]) via protobuf + Pillow, not our code."""
  meta = pipeline.dataset_info(_config(data_dir))
  files = sorted(tf.io.gfile.glob(
      os.path.join(meta.data_dir, f'moving_shapes-{split}.tfrecord-*')))
  labels, videos = [], []
  for raw in tf.data.TFRecordDataset(files).as_numpy_iterator():
    seq = tf.train.SequenceExample.FromString(raw)
    labels.append(seq.context.feature['clip/label/index'].int64_list.value[0])
    videos.append(np.stack([
        np.asarray(Image.open(io.BytesIO(f.bytes_list.value[0])).convert('RGB'))
        for f in seq.feature_lists.feature_list['image/encoded'].feature
    ]))
  return np.array(labels), np.stack(videos)


def _normalize(video):
  return (video.astype(np.float32) / 255 - np.array(MEAN)) / np.array(STD)


def _collect(ds, num_batches=None):
  if num_batches is not None:
    ds = ds.take(num_batches)
  batches = list(ds.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _match(videos, candidates):
  """Index of the candidate equal to each video (within one grey level)."""
  tol = 1.01 / 255 / min(STD)
  flat_c = candidates.reshape(len(candidates), -1)
  best = []
  for video in videos.reshape(len(videos), -1):
    diff = np.abs(flat_c - video).max(axis=-1)
    best.append(diff.argmin())
    assert diff[best[-1]] < tol
  return np.array(best)


def _bilinear(img, out_h, out_w):
  """Numpy bilinear resize with half-pixel centres (tf.image.resize's rule)."""
  in_h, in_w = img.shape[:2]

  def axis(out_n, in_n):
    pos = np.clip((np.arange(out_n) + 0.5) * in_n / out_n - 0.5, 0, in_n - 1)
    lo = np.floor(pos).astype(int)
    return lo, np.minimum(lo + 1, in_n - 1), pos - lo

  y0, y1, wy = axis(out_h, in_h)
  x0, x1, wx = axis(out_w, in_w)
  img = img.astype(np.float64)
  top = img[y0][:, x0] * (1 - wx)[:, None] + img[y0][:, x1] * wx[:, None]
  bot = img[y1][:, x0] * (1 - wx)[:, None] + img[y1][:, x1] * wx[:, None]
  return top * (1 - wy)[:, None, None] + bot * wy[:, None, None]


# -----------------------------------------------------------------------------
# Metadata and errors.
# -----------------------------------------------------------------------------


def test_dataset_info(data_dir):
  meta = pipeline.dataset_info(_config(data_dir))
  assert meta.num_classes == 13 == len(meta.class_names)
  assert meta.class_names[:2] == ('move_left_to_right', 'move_right_to_left')
  assert dict(meta.num_examples) == {
      'train': NUM_TRAIN, 'validation': NUM_VAL, 'test': NUM_VAL}


def test_unknown_split_lists_available_splits(data_dir):
  with pytest.raises(VidjaxError) as err:
    pipeline.build_dataset(
        _config(data_dir), 'valid', train=False, batch_size=2)
  msg = str(err.value)
  assert 'moving_shapes/tiny' in msg and "'valid'" in msg
  for split in ('train', 'validation', 'test'):
    assert split in msg


@pytest.mark.parametrize('fn', ['build_dataset', 'dataset_info'])
def test_unknown_dataset_lists_known_ones(data_dir, fn):
  cfg = _config(data_dir, name='kinetics999/default')
  with pytest.raises(VidjaxError, match=r'kinetics999.*moving_shapes'):
    if fn == 'build_dataset':
      pipeline.build_dataset(cfg, 'train', train=True, batch_size=2)
    else:
      pipeline.dataset_info(cfg)


def test_bad_process_index(data_dir):
  with pytest.raises(VidjaxError, match='process_index'):
    pipeline.build_dataset(_config(data_dir), 'train', train=True,
                           batch_size=2, process_index=2, process_count=2)


def test_default_config_is_the_demo():
  c = config_lib.default_config().data
  assert c.name == 'moving_shapes/default' and c.data_dir is None
  assert c.horizontal_flip is False
  assert c.crop_size <= 64 and c.crop_size * c.eval_resize_ratio <= 64
  assert (c.num_frames - 1) * c.frame_stride + 1 <= 16


# -----------------------------------------------------------------------------
# Evaluation.
# -----------------------------------------------------------------------------


def test_eval_shapes_and_padding(data_dir):
  ds = pipeline.build_dataset(
      _config(data_dir), 'validation', train=False, batch_size=8)
  spec = ds.element_spec
  assert spec['video'].shape == (8, 4, 24, 24, 3)
  assert spec['video'].dtype == tf.float32
  assert spec['label'].dtype == tf.int32 and spec['mask'].dtype == tf.float32
  out = _collect(ds)
  assert len(out['mask']) == 8 * pipeline.num_eval_batches(NUM_VAL, 8) == 32
  np.testing.assert_array_equal(out['mask'], [1.0] * NUM_VAL + [0.0] * 6)
  assert not out['video'][NUM_VAL:].any()


def test_eval_yields_every_example_once_normalised(data_dir):
  labels, videos = _reference(data_dir, 'validation')
  # 8 frames, span 7: the centred clip starts at 0.
  expected = _normalize(videos[:, [0, 2, 4, 6]])
  out = _collect(pipeline.build_dataset(
      _config(data_dir, **IDENTITY), 'validation', train=False, batch_size=8))
  real = out['mask'] == 1
  match = _match(out['video'][real], expected)
  assert sorted(match) == list(range(NUM_VAL))
  np.testing.assert_array_equal(out['label'][real], labels[match])


def test_eval_resize_and_centre_crop_against_numpy(data_dir):
  _, videos = _reference(data_dir, 'validation')
  out = _collect(pipeline.build_dataset(
      _config(data_dir, crop_size=24, eval_resize_ratio=1.15), 'validation',
      train=False, batch_size=NUM_VAL))
  # Short side round(24 * 1.15) = 28, then the central 24: offset 2.
  clip = videos[:, [0, 2, 4, 6]]
  resized = np.stack([[_bilinear(f, 28, 28) for f in v] for v in clip])
  expected = _normalize(resized[:, :, 2:26, 2:26])
  np.testing.assert_allclose(out['video'], expected, atol=2e-3)


@pytest.mark.parametrize('process_count,batch_size', [(2, 4), (3, 4)])
def test_multi_process_eval_partitions_the_split(
    data_dir, process_count, batch_size):
  labels, videos = _reference(data_dir, 'validation')
  expected = _normalize(videos[:, [0, 2, 4, 6]])
  seen = []
  num_batches = math.ceil(math.ceil(NUM_VAL / process_count) / batch_size)
  for p in range(process_count):
    ds = pipeline.build_dataset(
        _config(data_dir, **IDENTITY), 'validation', train=False,
        batch_size=batch_size, process_index=p, process_count=process_count)
    out = _collect(ds)
    # Same number of batches everywhere keeps hosts in lock step.
    assert len(out['mask']) == num_batches * batch_size
    real = out['mask'] == 1
    match = _match(out['video'][real], expected)
    np.testing.assert_array_equal(out['label'][real], labels[match])
    seen.extend(match)
  assert sorted(seen) == list(range(NUM_VAL))


# -----------------------------------------------------------------------------
# Training.
# -----------------------------------------------------------------------------


def test_train_shapes(data_dir):
  ds = pipeline.build_dataset(_config(data_dir), 'train', train=True,
                              batch_size=8)
  assert ds.element_spec['video'].shape == (8, 4, 24, 24, 3)
  out = _collect(ds, 3)
  assert out['video'].dtype == np.float32 and out['label'].dtype == np.int32
  np.testing.assert_array_equal(out['mask'], np.ones(24))
  assert np.all((0 <= out['label']) & (out['label'] < 13))


def test_train_is_reproducible_and_seeded(data_dir):
  cfg = _config(data_dir)
  build = lambda seed: _collect(pipeline.build_dataset(
      cfg, 'train', train=True, batch_size=8, seed=seed), 4)
  a, b, c = build(3), build(3), build(4)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a['video'], c['video'])


@pytest.mark.parametrize(
    'process_count,batch_size,start_step,total',
    [
        (1, 8, 5, 9),  # 52 clips = 6.5 batches: resumes across an epoch end.
        (2, 4, 6, 9),  # File sharding: 26 clips per process.
        (3, 4, 4, 7),  # Record sharding (2 shards < 3 processes).
    ],
)
def test_start_step_resumes_the_stream(
    data_dir, process_count, batch_size, start_step, total):
  cfg = _config(data_dir, horizontal_flip=True)
  for p in range(process_count):
    kwargs = dict(train=True, batch_size=batch_size, seed=11,
                  process_index=p, process_count=process_count)
    full = _collect(pipeline.build_dataset(cfg, 'train', **kwargs), total)
    resumed = _collect(
        pipeline.build_dataset(cfg, 'train', start_step=start_step, **kwargs),
        total - start_step)
    cut = start_step * batch_size
    for key in full:
      np.testing.assert_array_equal(resumed[key], full[key][cut:])


@pytest.mark.parametrize('process_count', [1, 2, 3])
def test_train_epochs_partition_the_split(data_dir, process_count):
  labels, videos = _reference(data_dir, 'train')
  # 8 frames, span 7: a training clip starts at frame 0 or 1.
  candidates = np.concatenate([
      _normalize(videos[:, [0, 2, 4, 6]]), _normalize(videos[:, [1, 3, 5, 7]])
  ])
  seen = []
  for p in range(process_count):
    per_epoch = (len(range(p, NUM_TRAIN, process_count)) if process_count > 2
                 else NUM_TRAIN // process_count)
    ds = pipeline.build_dataset(
        _config(data_dir, **IDENTITY), 'train', train=True, batch_size=1,
        seed=5, process_index=p, process_count=process_count)
    out = _collect(ds, 2 * per_epoch)
    record = _match(out['video'], candidates) % NUM_TRAIN
    np.testing.assert_array_equal(out['label'], labels[record])
    # Each epoch visits this process's records once, in a new order.
    first, second = record[:per_epoch], record[per_epoch:]
    assert len(set(first)) == per_epoch and set(first) == set(second)
    assert not np.array_equal(first, second)
    seen.extend(first)
  assert sorted(seen) == list(range(NUM_TRAIN))


# -----------------------------------------------------------------------------
# Transforms.
# -----------------------------------------------------------------------------


def _jpeg_clip(data_dir):
  meta = pipeline.dataset_info(_config(data_dir))
  path = os.path.join(
      meta.data_dir, 'moving_shapes-train.tfrecord-00000-of-00002')
  raw = next(tf.data.TFRecordDataset(path).as_numpy_iterator())
  seq = tf.train.SequenceExample.FromString(raw)
  return tf.constant([
      f.bytes_list.value[0]
      for f in seq.feature_lists.feature_list['image/encoded'].feature
  ])


def test_random_crop_is_the_same_box_on_every_frame(data_dir):
  jpegs = _jpeg_clip(data_dir)
  full = transforms.decode_frames(jpegs).numpy().astype(int)
  areas = []
  for i in range(10):
    window = transforms.random_crop_window(
        tf.constant([32, 32, 3]), tf.constant([i, 0]), (0.3, 0.6), (0.75, 1.33))
    y, x, h, w = window.numpy()
    assert 0 <= y and y + h <= 32 and 0 <= x and x + w <= 32
    assert 0.75 - 0.1 <= w / h <= 1.33 + 0.1
    areas.append(h * w / 32**2)
    crop = transforms.decode_frames(jpegs, window).numpy().astype(int)
    assert crop.shape == (8, h, w, 3)
    # decode_and_crop_jpeg upsamples chroma differently in the last column
    # of the window; everything else is the crop of the full decode.
    np.testing.assert_array_equal(
        crop[:, :, :-1], full[:, y : y + h, x : x + w - 1])
  assert min(areas) >= 0.3 - 0.05 and max(areas) <= 0.6 + 0.05
  assert len(set(areas)) > 1


def test_resize_short_side_and_centre_crop():
  video = tf.random.uniform([2, 20, 30, 3], maxval=255)
  assert transforms.resize_short_side(video, 10).shape == (2, 10, 15, 3)
  tall = tf.transpose(video, [0, 2, 1, 3])
  assert transforms.resize_short_side(tall, 10).shape == (2, 15, 10, 3)
  same = transforms.resize_short_side(tf.cast(video, tf.uint8), 20)
  assert same.dtype == tf.float32
  np.testing.assert_array_equal(same, tf.cast(tf.cast(video, tf.uint8),
                                              tf.float32))
  crop = transforms.centre_crop(video, 8, 12).numpy()
  np.testing.assert_array_equal(crop, video.numpy()[:, 6:14, 9:21])


def test_flip_mirrors_whole_clips():
  video = tf.random.uniform([3, 4, 5, 3])
  flips = []
  for i in range(16):
    out = transforms.random_flip_left_right(video, tf.constant([i, 1])).numpy()
    flipped = np.array_equal(out, video.numpy()[:, :, ::-1])
    assert flipped or np.array_equal(out, video.numpy())
    flips.append(flipped)
  assert any(flips) and not all(flips)


def test_normalize_against_numpy():
  video = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 3), np.uint8)
  got = transforms.normalize(tf.constant(video), MEAN, STD).numpy()
  np.testing.assert_allclose(got, _normalize(video), rtol=1e-6, atol=1e-6)
