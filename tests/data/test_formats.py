"""DMVR SequenceExample writer and parser."""

import io

import numpy as np
from PIL import Image
import tensorflow as tf

from vidjax.data import formats


def _smooth_frames(num_frames=5, height=24, width=32, seed=0):
  # Smooth content keeps JPEG error small and predictable.
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
  frames = []
  for t in range(num_frames):
    phase = rng.uniform(0, 2 * np.pi, 3)
    rgb = [127 + 100 * np.sin(4 * xx + 3 * yy + p + t) for p in phase]
    frames.append(np.stack(rgb, -1).astype(np.uint8))
  return np.stack(frames)


def test_round_trip():
  frames = _smooth_frames()
  jpegs = [formats.encode_jpeg(f, quality=90) for f in frames]
  seq = formats.make_sequence_example(
      encoded_frames=jpegs,
      label=7,
      label_text='rotate clockwise (fast) "quoted"',
      filename='some/dir/video_000001.mp4',
      start_timestamp_us=1_500_000,
      end_timestamp_us=11_500_000,
  )
  parsed = formats.parse_sequence_example(
      tf.constant(seq.SerializeToString())
  )
  assert parsed['frames'].shape == (len(frames),)
  decoded = np.stack(
      [tf.io.decode_jpeg(j).numpy() for j in parsed['frames'].numpy()]
  )
  assert decoded.shape == frames.shape
  err = np.abs(decoded.astype(int) - frames.astype(int))
  assert err.mean() < 2.5 and err.max() < 40
  # Frames stay in order: each decoded frame is closest to its own original.
  dist = np.abs(
      decoded[:, None].astype(float) - frames[None].astype(float)
  ).mean(axis=(2, 3, 4))
  np.testing.assert_array_equal(dist.argmin(axis=1), np.arange(len(frames)))
  assert parsed['label'].numpy() == 7
  assert parsed['label_text'].numpy().decode() == (
      'rotate clockwise (fast) "quoted"'
  )
  assert parsed['filename'].numpy() == b'some/dir/video_000001.mp4'
  assert parsed['start_timestamp_us'].numpy() == 1_500_000
  assert parsed['end_timestamp_us'].numpy() == 11_500_000


def test_writer_layout_matches_dmvr():
  # DMVR's reader expects one feature per frame with a single bytes value and
  # int64/bytes context features under these exact keys.
  seq = formats.make_sequence_example(
      encoded_frames=[b'a', b'bb', b'ccc'], label=2, label_text='x',
      filename='f',
  )
  frames = seq.feature_lists.feature_list['image/encoded'].feature
  values = [list(f.bytes_list.value) for f in frames]
  assert values == [[b'a'], [b'bb'], [b'ccc']]
  ctx = seq.context.feature
  assert list(ctx['clip/label/index'].int64_list.value) == [2]
  assert list(ctx['clip/label/text'].bytes_list.value) == [b'x']
  assert list(ctx['video/filename'].bytes_list.value) == [b'f']
  assert 'clip/start/timestamp' not in ctx and 'clip/end/timestamp' not in ctx


def _hand_built(label=None, text=None, filename=None, jpegs=(b'j0', b'j1')):
  # Built field by field the way DMVR's generate_from_file.py does, without
  # going through our writer.
  seq = tf.train.SequenceExample()
  if label is not None:
    seq.context.feature['clip/label/index'].int64_list.value[:] = label
  if text is not None:
    seq.context.feature['clip/label/text'].bytes_list.value[:] = (text,)
  if filename is not None:
    seq.context.feature['video/filename'].bytes_list.value[:] = (filename,)
  for jpeg in jpegs:
    seq.feature_lists.feature_list['image/encoded'].feature.add(
    ).bytes_list.value[:] = [jpeg]
  return tf.constant(seq.SerializeToString())


def test_missing_optional_keys_get_defaults():
  parsed = formats.parse_sequence_example(_hand_built())
  assert parsed['frames'].numpy().tolist() == [b'j0', b'j1']
  assert parsed['label'].numpy() == formats.MISSING_LABEL
  assert parsed['label_text'].numpy() == b''
  assert parsed['filename'].numpy() == b''
  assert parsed['start_timestamp_us'].numpy() == formats.MISSING_TIMESTAMP
  assert parsed['end_timestamp_us'].numpy() == formats.MISSING_TIMESTAMP


def test_multi_label_record_keeps_first_label():
  parsed = formats.parse_sequence_example(
      _hand_built(label=[5, 9], text=b'five', filename=b'v.mp4')
  )
  assert parsed['label'].numpy() == 5
  assert parsed['label_text'].numpy() == b'five'
  assert parsed['filename'].numpy() == b'v.mp4'


def test_parser_works_inside_tf_data():
  records = [_hand_built(label=[i], jpegs=[b'x'] * (i + 1)) for i in range(3)]
  ds = tf.data.Dataset.from_tensor_slices(tf.stack(records))
  ds = ds.map(formats.parse_sequence_example)
  got = [(int(e['label']), len(e['frames'])) for e in ds.as_numpy_iterator()]
  assert got == [(0, 1), (1, 2), (2, 3)]


def test_encode_jpeg_is_a_jpeg_of_the_frame_at_the_given_quality():
  frame = _smooth_frames(1)[0]
  errors = {}
  for quality in (50, 95):
    jpeg = formats.encode_jpeg(frame, quality=quality)
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == 'JPEG'
    assert img.size == (frame.shape[1], frame.shape[0])
    decoded = np.asarray(img.convert('RGB')).astype(int)
    errors[quality] = np.abs(decoded - frame.astype(int)).mean()
  assert errors[95] < errors[50] < 8
