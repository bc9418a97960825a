"""The synthetic `moving_shapes` dataset: renderer, builder, files on disk."""

import collections
import dataclasses
import filecmp
import io
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from vidjax.data import builders
from vidjax.data.builders import moving_shapes as ms
from vidjax.errors import VidjaxError

NUM_FRAMES, SIZE = 8, 32  # The `tiny` config.


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp('tfds')
  builder = ms.MovingShapes(config='tiny', data_dir=data_dir)
  builder.download_and_prepare()
  return builder


def _records(builder, split):
  """Decodes a split with protobuf + Pillow, independently of our parser."""
  out = []
  for path in builder.split_files(split):
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      seq = tf.train.SequenceExample.FromString(raw)
      ctx = seq.context.feature
      frames = [
          np.asarray(Image.open(io.BytesIO(f.bytes_list.value[0])))
          for f in seq.feature_lists.feature_list['image/encoded'].feature
      ]
      out.append(dict(
          label=ctx['clip/label/index'].int64_list.value[0],
          text=ctx['clip/label/text'].bytes_list.value[0].decode(),
          filename=ctx['video/filename'].bytes_list.value[0].decode(),
          frames=np.stack(frames),
          raw=raw,
      ))
  return out


def _params(class_name, seed, size=SIZE, num_frames=16):
  rng = np.random.default_rng(seed)
  return ms.sample_params(rng, class_name, num_frames, size)


def _opacity(params):
  """Total opacity of the main shape per frame."""
  return ms.render(params, with_mask=True)[1].sum(axis=(1, 2))


def _centroids(masks):
  ys, xs = np.mgrid[0 : masks.shape[1], 0 : masks.shape[2]]
  total = masks.sum(axis=(1, 2))
  return (
      (masks * xs).sum(axis=(1, 2)) / total,
      (masks * ys).sum(axis=(1, 2)) / total,
  )


# -----------------------------------------------------------------------------
# The prepared files.
# -----------------------------------------------------------------------------


def test_builder_is_registered_with_tfds_and_vidjax(tiny):
  assert 'moving_shapes' in builders.BUILDERS
  again = tfds.builder('moving_shapes/tiny', data_dir=tiny.data_dir_root)
  assert isinstance(again, ms.MovingShapes)
  assert again.is_prepared()


def test_files_and_dataset_info(tiny):
  cfg = tiny.builder_config
  sizes = {'train': cfg.num_train, 'validation': cfg.num_validation,
           'test': cfg.num_test}
  info = json.loads(
      (tiny.data_path / 'dataset_info.json').read_text()
  )
  on_disk = {
      s['name']: sum(int(n) for n in s['shardLengths']) for s in info['splits']
  }
  assert on_disk == sizes
  for split, n in sizes.items():
    files = tiny.split_files(split)
    assert len(files) == cfg.num_shards
    for i, path in enumerate(files):
      assert os.path.basename(path) == (
          f'moving_shapes-{split}.tfrecord-{i:05d}-of-{cfg.num_shards:05d}'
      )
    assert tiny.num_examples(split) == n
  labels = (tiny.data_path / 'label.labels.txt').read_text().split()
  assert tuple(labels) == ms.CLASS_NAMES == tiny.class_names


def test_tfds_as_dataset_decodes_whole_videos(tiny):
  ds = tiny.as_dataset(split='validation')
  count = 0
  for ex in ds.as_numpy_iterator():
    assert ex['video'].shape == (NUM_FRAMES, SIZE, SIZE, 3)
    assert ex['label_text'].decode() == ms.CLASS_NAMES[ex['label']]
    count += 1
  assert count == tiny.num_examples('validation')


def test_prepare_again_is_a_no_op(tiny):
  before = {p: os.stat(p).st_mtime_ns for p in tiny.split_files('train')}
  again = ms.MovingShapes(config='tiny', data_dir=tiny.data_dir_root)
  again.download_and_prepare()
  after = {p: os.stat(p).st_mtime_ns for p in again.split_files('train')}
  assert before == after


@pytest.mark.parametrize('split', ['train', 'validation', 'test'])
def test_every_example_decodes_with_consistent_labels(tiny, split):
  records = _records(tiny, split)
  assert len(records) == tiny.num_examples(split)
  indices = set()
  for r in records:
    assert r['frames'].shape == (NUM_FRAMES, SIZE, SIZE, 3)
    assert 0 <= r['label'] < len(ms.CLASS_NAMES)
    # Same label map in every split: the text always names the index.
    assert r['text'] == ms.CLASS_NAMES[r['label']]
    prefix, _, index = r['filename'].rpartition('/')
    assert prefix == f'moving_shapes/{split}'
    indices.add(int(index))
    # The label follows from the example's index, whatever the shuffle.
    assert r['label'] == ms.label_of(int(index))
  assert indices == set(range(len(records)))


def test_classes_are_balanced(tiny):
  counts = collections.Counter(r['label'] for r in _records(tiny, 'train'))
  assert set(counts) == set(range(len(ms.CLASS_NAMES)))
  assert max(counts.values()) - min(counts.values()) <= 1


def test_stored_frames_are_jpegs_of_the_renders(tiny):
  rec = _records(tiny, 'validation')[0]
  index = int(rec['filename'].rpartition('/')[2])
  params = ms.sample_params(
      ms.example_rng(0, 'validation', index), rec['text'], NUM_FRAMES, SIZE
  )
  rendered = ms.render(params).astype(int)
  assert np.abs(rec['frames'].astype(int) - rendered).mean() < 6


def test_generation_is_deterministic(tiny, tmp_path):
  other = ms.MovingShapes(config='tiny', data_dir=tmp_path)
  other.download_and_prepare()
  for split in ('train', 'validation', 'test'):
    for a, b in zip(tiny.split_files(split), other.split_files(split),
                    strict=True):
      assert filecmp.cmp(a, b, shallow=False)


def test_splits_hold_different_videos(tiny):
  frames = {
      split: {r['frames'].tobytes() for r in _records(tiny, split)}
      for split in ('train', 'validation', 'test')
  }
  assert not frames['train'] & frames['validation']
  assert not frames['train'] & frames['test']
  assert not frames['validation'] & frames['test']
  # Same index and class, different split: different clip.
  a = ms.render(ms.sample_params(ms.example_rng(0, 'train', 0), 'grow', 8, 32))
  b = ms.render(
      ms.sample_params(ms.example_rng(0, 'validation', 0), 'grow', 8, 32)
  )
  assert not np.array_equal(a, b)


# -----------------------------------------------------------------------------
# The renderer.
# -----------------------------------------------------------------------------


@pytest.mark.parametrize('pair', ms.ORDER_PAIRS, ids='-'.join)
def test_reversed_class_is_the_time_reversal(pair):
  forward, backward = pair
  for seed in range(3):
    fwd, fwd_mask = ms.render(_params(forward, seed), with_mask=True)
    bwd, bwd_mask = ms.render(_params(backward, seed), with_mask=True)
    np.testing.assert_array_equal(bwd, fwd[::-1])
    np.testing.assert_array_equal(bwd_mask, fwd_mask[::-1])
    # And it is a video, not a still: frames differ along time.
    assert not np.array_equal(fwd[0], fwd[-1])


def test_order_pairs_cover_the_order_classes():
  assert len(ms.ORDER_PAIRS) == 5
  in_pairs = {c for p in ms.ORDER_PAIRS for c in p}
  assert in_pairs | set(ms.EXCLUSIVE_SHAPES) == set(ms.CLASS_NAMES)


@pytest.mark.parametrize(
    'class_name,axis,sign',
    [
        ('move_left_to_right', 0, 1),
        ('move_right_to_left', 0, -1),
        ('move_top_to_bottom', 1, 1),
        ('move_bottom_to_top', 1, -1),
    ],
)
def test_translation_moves_the_shape(class_name, axis, sign):
  for seed in range(4):
    params = _params(class_name, seed, size=64)
    frames, masks = ms.render(params, with_mask=True)
    # From the mask: the centroid moves monotonically, a good way across.
    pos = _centroids(masks)[axis]
    assert np.all(sign * np.diff(pos) > 0)
    assert sign * (pos[-1] - pos[0]) > 0.2 * 64
    # From the pixels: where frames differ from the shape-less render.
    hidden = dataclasses.replace(
        params,
        pose=dataclasses.replace(params.pose, alpha=np.zeros(16)),
    )
    diff = np.abs(
        frames.astype(int) - ms.render(hidden).astype(int)
    ).max(axis=-1)
    pix = _centroids((diff > 20).astype(float))[axis]
    assert sign * (pix[-1] - pix[0]) > 0.2 * 64


def test_grow_and_shrink_change_area():
  for seed in range(4):
    area = _opacity(_params('grow', seed))
    assert np.all(np.diff(area) >= -0.5)  # Allow anti-aliasing jitter.
    assert area[-1] > 2 * area[0]
    area = _opacity(_params('shrink', seed))
    assert area[0] > 2 * area[-1]


def _orientation(masks):
  """Principal-axis angle per frame (screen coordinates, y down), unwrapped."""
  ys, xs = np.mgrid[0 : masks.shape[1], 0 : masks.shape[2]]
  cx, cy = _centroids(masks)
  angles = []
  for m, x0, y0 in zip(masks, cx, cy):
    dx, dy = xs - x0, ys - y0
    mu20, mu02, mu11 = (m * dx * dx).sum(), (m * dy * dy).sum(), (
        m * dx * dy).sum()
    angles.append(np.arctan2(2 * mu11, mu20 - mu02))
  return np.unwrap(angles) / 2  # Axis angle has period pi, so 2x has 2pi.


@pytest.mark.parametrize(
    'class_name,sign',
    [('rotate_clockwise', 1), ('rotate_counterclockwise', -1)],
)
def test_rotation_direction(class_name, sign):
  for seed in range(4):
    params = _params(class_name, seed, size=64)
    params = dataclasses.replace(params, shape='bar')
    _, masks = ms.render(params, with_mask=True)
    theta = _orientation(masks)
    # Angles grow clockwise on screen when y points down.
    assert np.all(sign * np.diff(theta) > 0)
    expected = params.pose.angle[-1] - params.pose.angle[0]
    assert sign * expected > 0
    np.testing.assert_allclose(theta[-1] - theta[0], expected, atol=0.1)


def test_fade_in_and_out():
  for seed in range(4):
    opacity = _opacity(_params('fade_in', seed))
    assert opacity[0] == 0
    assert np.all(np.diff(opacity) >= 0)
    assert opacity[-1] > 20
    opacity = _opacity(_params('fade_out', seed))
    assert opacity[-1] == 0 and opacity[0] > 20


def test_exclusive_shapes_belong_to_one_class():
  for class_name in ms.CLASS_NAMES:
    for seed in range(15):
      params = _params(class_name, seed, num_frames=4)
      owner = [c for c, s in ms.EXCLUSIVE_SHAPES.items() if s == params.shape]
      if class_name in ms.EXCLUSIVE_SHAPES:
        assert owner == [class_name]
      else:
        assert not owner
      if params.distractor is not None:
        assert params.distractor['shape'] in ms.COMMON_SHAPES


def test_random_parameters_vary():
  params = [_params('move_left_to_right', s) for s in range(20)]
  assert len({p.shape for p in params}) > 1
  assert len({round(p.radius, 3) for p in params}) == 20
  assert len({tuple(np.round(p.colour)) for p in params}) == 20
  assert 0 < sum(p.distractor is not None for p in params) < 20


def test_unknown_config_is_a_vidjax_error():
  with pytest.raises(VidjaxError, match='moving_shapes/tiny'):
    builders.get_builder('moving_shapes/huge')
