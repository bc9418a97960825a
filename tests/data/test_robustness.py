"""Bad input is skipped or handled, counted and logged; never a crash.

Also: reading existing DMVR TFRecords (`name='tfrecord'`). Every record here
is written by the test (tests/data/records.py).
"""
import os

import numpy as np
import pytest

from tests.data import records as R
from vidjax.data import pipeline
from vidjax.data import sources
from vidjax.errors import VidjaxError

UNDECODABLE, NO_FRAMES, BAD_LABEL, TRUNCATED = (
    pipeline.SKIP_REASONS.index(k) + 1
    for k in ('undecodable', 'no_frames', 'bad_label', 'truncated'))
# Position in the split (shard-major) -> what the record is.
#   shard 0: 0 good, 1 no frames, 2 short (3 frames)
#   shard 1: 3 corrupt JPEGs, 4 label 9 of 4 classes, 5 good
#   shard 'trunc': 6 good, then 7, a record cut in half.
EXPECTED_STATUS = {0: 0, 1: NO_FRAMES, 2: 0, 3: UNDECODABLE, 4: BAD_LABEL,
                   5: 0, 6: 0, 7: TRUNCATED}


@pytest.fixture(scope='module')
def bad_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('bad'))
  recs = [
      R.record(0, 12, 0),
      R.record(1, 12, 1, corrupt=range(1, 12)),
      R.record(2, 0, 2),
      R.record(3, 12, 9),
      R.record(4, 3, 3),
      R.record(5, 12, 1),
  ]
  R.write_shards(d, 'val', recs, 2)  # Round robin: 0,2,4 | 1,3,5.
  (trunc,) = R.write_shards(os.path.join(d, 't'), 'x',
                            [R.record(6, 12, 2), R.record(7, 12, 3)], 1)
  R.truncate(trunc, 40)
  os.rename(trunc, os.path.join(d, 'val-trunc'))
  return d


def _config(bad_dir, **overrides):
  pattern = os.path.join(bad_dir, 'val-*')
  overrides = {'train_pattern': pattern, 'eval_pattern': pattern, **overrides}
  return R.data_config(**overrides)


def _collect(ds, num_batches=None):
  if num_batches is not None:
    ds = ds.take(num_batches)
  batches = list(ds.as_numpy_iterator())
  return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def test_scan_counts_records(bad_dir):
  # The cut record counts: it is reported as skipped, not lost silently.
  assert sources.scan_tfrecord(os.path.join(bad_dir, 'val-trunc')) == (2, True)
  good = os.path.join(bad_dir, 'val-00000-of-00002')
  assert sources.scan_tfrecord(good) == (3, False)
  # With metadata (a TFDS-prepared shard) the records the cut hid are known
  # too, and the shard still yields all of them.
  shard = sources._shard(os.path.join(bad_dir, 'val-trunc'), 3)
  assert (shard.num_records, shard.found, shard.lost) == (3, 2, 1)


def test_existing_tfrecords_info(bad_dir, tmp_path):
  meta = pipeline.dataset_info(_config(bad_dir))
  assert meta.num_classes == 4 and meta.class_names == ('0', '1', '2', '3')
  assert dict(meta.num_examples) == {'train': 8, 'validation': 8}
  names = tmp_path / 'classes.txt'
  names.write_text('a b\nc (d)\n"e"\nf\n')
  meta = pipeline.dataset_info(_config(bad_dir, num_classes=None,
                                       class_names_file=str(names)))
  assert meta.class_names == ('a b', 'c (d)', '"e"', 'f')


@pytest.mark.parametrize('overrides,needle', [
    (dict(num_classes=None), 'num_classes'),
    (dict(num_classes=3, class_names_file='CLASSES'), 'lists 4 class names'),
    (dict(eval_pattern='/nonexistent/val-*'), 'matches no files'),
])
def test_existing_tfrecords_config_errors(bad_dir, tmp_path, overrides,
                                          needle):
  if overrides.get('class_names_file') == 'CLASSES':
    (tmp_path / 'c.txt').write_text('a\nb\nc\nd\n')
    overrides['class_names_file'] = str(tmp_path / 'c.txt')
  with pytest.raises(VidjaxError, match=needle):
    cfg = _config(bad_dir, **overrides)
    pipeline.dataset_info(cfg)
    pipeline.build_dataset(cfg, 'validation', train=False, batch_size=2)


def test_eval_marks_and_logs_bad_records(bad_dir, capfd):
  out = _collect(pipeline.build_dataset(
      _config(bad_dir, num_test_crops=3), 'validation', train=False,
      batch_size=4))
  capfd.readouterr()  # tf.print writes from C++; read what it wrote.
  assert len(out['mask']) == 4 * 6  # 8 videos x 3 views.
  real = out['video_index'] >= 0
  assert sorted(out['video_index'][real]) == sorted(list(range(8)) * 3)
  for video, status in EXPECTED_STATUS.items():
    rows = out['video_index'] == video
    np.testing.assert_array_equal(out['status'][rows], status)
    np.testing.assert_array_equal(out['mask'][rows], float(status == 0))
    np.testing.assert_array_equal(out['view_index'][rows], [0, 1, 2])
  assert not out['video'][out['mask'] == 0].any()
  np.testing.assert_array_equal(np.flatnonzero(out['padded'][::3]), [2])
  assert out['filename'][out['video_index'] == 4][0] == b'video3.mp4'


def test_skipped_records_are_logged(bad_dir, capfd):
  list(pipeline.build_dataset(_config(bad_dir), 'validation', train=False,
                              batch_size=8).as_numpy_iterator())
  err = capfd.readouterr().err
  assert err.count('vidjax: skipped record') == 4, err
  for reason in ('undecodable', 'no_frames', 'bad_label'):
    assert reason in err
  trunc = os.path.join(bad_dir, 'val-trunc')
  # Record 7 starts after record 6's frame (16 bytes of framing).
  offset = len(R.record(6, 12, 2)) + 16
  assert f'skipped record at {trunc} offset {offset}: truncated' in err
  assert 'skipped record 4 (video3.mp4): bad_label' in err
  assert 'skipped record 3 (video1.mp4): undecodable' in err


def test_train_counts_and_replaces_bad_records(bad_dir):
  per_epoch = 8
  out = _collect(pipeline.build_dataset(
      _config(bad_dir), 'train', train=True, batch_size=per_epoch, seed=1), 2)
  # Running totals of pipeline.COUNT_NAMES.
  once = [int(k in ('undecodable', 'no_frames', 'bad_label', 'truncated',
                    'padded')) for k in pipeline.COUNT_NAMES]
  np.testing.assert_array_equal(out['counts'][per_epoch - 1], once)
  np.testing.assert_array_equal(out['counts'][-1], 2 * np.array(once))
  assert np.all((out['label'] >= 0) & (out['label'] < 4))
  # Every example is a real clip: a skipped record repeats the one before.
  first_bad = np.flatnonzero(np.diff(out['counts'][:, :-1].sum(1)) > 0) + 1
  for i in first_bad:
    np.testing.assert_array_equal(out['video'][i], out['video'][i - 1])
    assert out['mask'][i] == 1
  # Only a stream that starts on skipped records has blanks (mask 0).
  real = out['mask'] == 1
  assert out['video'][real].reshape(real.sum(), -1).max(-1).min() > 0
  assert not out['video'][~real].any()
  assert np.all(np.cumsum(real) == np.arange(1, len(real) + 1) - (~real).sum())


def test_train_resumes_exactly_over_bad_records(bad_dir):
  cfg = _config(bad_dir)
  kwargs = dict(train=True, batch_size=3, seed=2)
  full = _collect(pipeline.build_dataset(cfg, 'train', **kwargs), 9)
  bad = np.diff(full['counts'][:, :-1].sum(1), prepend=0) > 0
  for start in range(1, 8):
    resumed = _collect(pipeline.build_dataset(cfg, 'train', start_step=start,
                                              **kwargs), 9 - start)
    for key in ('video', 'label', 'mask'):
      np.testing.assert_array_equal(resumed[key], full[key][3 * start:])
    # Counts start at the resume point.
    np.testing.assert_array_equal(
        resumed['counts'], full['counts'][3 * start:]
        - full['counts'][3 * start - 1])
  assert any(bad[3 * s] for s in range(1, 8))  # Resuming onto a skip.


def test_good_record_values(bad_dir):
  """Eval clip 2,4,6,8 of 12 frames; reversed with reverse_time."""
  for reverse, frames in ((False, [2, 4, 6, 8]), (True, [8, 6, 4, 2])):
    out = _collect(pipeline.build_dataset(
        _config(bad_dir, reverse_time=reverse), 'validation', train=False,
        batch_size=8))
    video = out['video'][out['video_index'] == 0][0]
    expected = [R.frame_level(0, t) / 255 for t in frames]
    np.testing.assert_allclose(video[:, 8, 12, 0], expected, atol=3 / 255)
    # Short video (3 frames): frames 0, 2, then the last frame repeated.
    short = out['video'][out['video_index'] == 2][0]
    expected = [R.frame_level(4, t) / 255 for t in [0, 2, 2, 2]]
    if reverse:
      expected = expected[::-1]
    np.testing.assert_allclose(short[:, 8, 12, 0], expected, atol=3 / 255)


def test_one_truncated_jpeg_is_undecodable(tmp_path):
  """Half of one sampled frame's JPEG bytes: the record is skipped."""
  frames = [R.jpeg(R.frame(9, t)) for t in range(12)]
  frames[4] = frames[4][: len(frames[4]) // 2]  # The centred clip uses 4.
  from vidjax.data import formats  # pylint: disable=g-import-not-at-top
  bad = formats.make_sequence_example(
      encoded_frames=frames, label=1, label_text='x',
      filename='half.mp4').SerializeToString()
  R.write_shards(str(tmp_path), 'val', [R.record(0, 12, 0), bad], 1)
  out = _collect(pipeline.build_dataset(
      R.data_config(eval_pattern=str(tmp_path / 'val-*')), 'validation',
      train=False, batch_size=2))
  np.testing.assert_array_equal(out['status'], [0, UNDECODABLE])
  np.testing.assert_array_equal(out['mask'], [1, 0])
