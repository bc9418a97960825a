"""Every record of a shard is accounted for, whatever its bytes hold.

Shards are written with TensorFlow's own `TFRecordWriter` (an independent
writer of the framing the reader parses) and then damaged byte by byte.
"""
import os
import struct
import types

import google_crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
import tensorflow as tf

from tests.data import records as R
from vidjax.data import pipeline
from vidjax.data import sources
from vidjax.data import tfrecord_reader as reader
from vidjax.data.keys import IMAGE_KEY, LABEL_INDEX_KEY

N = 6


def status(kind):
  return 0 if kind is None else reader.KINDS.index(kind) + 1


def write(path, recs):
  with tf.io.TFRecordWriter(path) as w:
    for r in recs:
      w.write(r)
  offsets = np.cumsum([0] + [16 + len(r) for r in recs])
  return [int(o) for o in offsets]


def rewrite(path, data):
  with open(path, 'wb') as f:
    f.write(bytes(data))


def masked(data):
  """TFRecord's masked crc32c, written out from its definition here."""
  crc = google_crc32c.value(bytes(data))
  return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


@pytest.fixture(scope='module')
def recs():
  # Two frames each: small enough that a property example takes
  # milliseconds, real enough that the pipeline decodes them.
  return [R.record(v, 2, v % 4) for v in range(N)]


@pytest.fixture()
def shard(tmp_path, recs):
  path = str(tmp_path / 'val-00000-of-00001')
  offsets = write(path, recs)
  with open(path, 'rb') as f:
    return path, bytearray(f.read()), offsets


def read(path, count=N):
  return list(reader.read_shard(path, count))


def statuses(out):
  return [s for _, s in out]


def test_sound_shard_reads_back_every_record(shard, recs):
  path, _, _ = shard
  out = read(path)
  assert [d for d, _ in out] == recs and statuses(out) == [0] * N
  assert reader.count_frames(path) == (N, False)


def test_masked_crc_matches_the_writer(shard, recs):
  _, raw, offsets = shard
  o = offsets[1]
  assert struct.unpack('<I', raw[o + 8:o + 12])[0] == masked(raw[o:o + 8])
  end = offsets[2] - 4
  assert struct.unpack('<I', raw[end:end + 4])[0] == masked(recs[1])
  assert reader.masked_crc(recs[1]) == masked(recs[1])


# Where a byte of record 2 is flipped -> what record 2 becomes.
@pytest.mark.parametrize('where,kind', [
    (lambda o: o[2] + 1, 'bad_length_crc'),  # The length field.
    (lambda o: o[2] + 9, 'bad_length_crc'),  # The length's CRC.
    (lambda o: o[2] + 30, 'bad_data_crc'),  # The data.
    (lambda o: o[3] - 2, 'bad_data_crc'),  # The data's CRC.
])
def test_one_flipped_byte_costs_one_record(shard, recs, capfd, where, kind):
  path, raw, offsets = shard
  raw[where(offsets)] ^= 0x40
  rewrite(path, raw)
  out = read(path)
  assert statuses(out) == [0, 0, status(kind), 0, 0, 0]
  assert [d for d, s in out if not s] == recs[:2] + recs[3:]
  assert reader.count_frames(path) == (N, False)
  err = capfd.readouterr().err
  assert err.count('vidjax: skipped record') == 1
  assert f'skipped record at {path} offset {offsets[2]}: {kind}' in err


def test_garbage_length(shard, recs):
  """A huge length with a checksum that agrees (a writer that lied)."""
  path, raw, offsets = shard
  o = offsets[2]
  length = struct.pack('<Q', 1 << 40)
  raw[o:o + 12] = length + struct.pack('<I', masked(length))
  rewrite(path, raw)
  out = read(path)
  assert statuses(out) == [0, 0, status('garbage_length'), 0, 0, 0]
  assert [d for d, s in out if not s] == recs[:2] + recs[3:]
  # The same length without its checksum is plain damage.
  raw[o + 8] ^= 1
  rewrite(path, raw)
  assert statuses(read(path)) == [0, 0, status('bad_length_crc'), 0, 0, 0]


def test_truncation(shard, recs):
  path, raw, offsets = shard
  rewrite(path, raw[:offsets[4] + 20])  # Inside record 4's data.
  assert reader.count_frames(path) == (5, True)
  # Without metadata, the cut record is the last one known of ...
  assert statuses(read(path, 5)) == [0] * 4 + [status('truncated')]
  # ... with it, the records the cut hid are counted as well.
  out = read(path, N)
  assert statuses(out) == [0] * 4 + [status('truncated')] * 2
  assert [d for d, _ in out[:4]] == recs[:4]
  rewrite(path, raw[:offsets[4] + 5])  # Inside record 4's header.
  assert statuses(read(path)) == [0] * 4 + [status('truncated')] * 2


def test_content_kinds(tmp_path, recs):
  seq = tf.train.SequenceExample.FromString(recs[0])
  no_frames_key = tf.train.SequenceExample()
  no_frames_key.CopyFrom(seq)
  del no_frames_key.feature_lists.feature_list[IMAGE_KEY]
  no_label = tf.train.SequenceExample()
  no_label.CopyFrom(seq)
  del no_label.context.feature[LABEL_INDEX_KEY]
  path = str(tmp_path / 'content')
  write(path, [recs[0], b'\xff\xfe\x00 not a proto', recs[1],
               no_frames_key.SerializeToString(),
               no_label.SerializeToString()])
  assert statuses(read(path, 5)) == [
      0, status('not_sequence_example'), 0, status('missing_keys'),
      status('missing_keys')]


def test_more_records_than_metadata_is_an_error(shard):
  path, _, _ = shard
  with pytest.raises(Exception, match='re-prepare'):
    sources._shard(path, N - 1)


# ---------------------------------------------------------------- Property.

Corruption = st.one_of(
    st.tuples(st.just('flip'), st.floats(0, 1, exclude_max=True),
              st.integers(1, 255)),
    st.tuples(st.just('garbage'), st.floats(0, 1, exclude_max=True),
              st.binary(min_size=1, max_size=64)),
    st.tuples(st.just('cut'), st.floats(0, 1, exclude_max=True), st.none()),
)


def corrupt(raw: bytearray, ops) -> tuple[bytearray, set[int]]:
  """Applies `ops`; returns the bytes and the set of byte positions touched.

  'garbage' overwrites in place (a bad copy), 'cut' drops the tail (an
  interrupted one); neither moves a byte, so an untouched record is still
  where it was written.
  """
  raw = bytearray(raw)
  touched, end = set(), len(raw)
  for op, where, arg in ops:
    pos = int(where * len(raw))
    if op == 'flip':
      raw[pos] ^= arg
      touched.add(pos)
    elif op == 'garbage':
      arg = arg[:len(raw) - pos]
      raw[pos:pos + len(arg)] = arg
      touched.update(range(pos, pos + len(arg)))
    else:
      end = min(end, pos)
  return raw[:end], touched


def damaged(shard, ops):
  """Writes `shard` corrupted by `ops`; the records that survived it."""
  path, raw, offsets = shard
  bad, touched = corrupt(raw, ops)
  rewrite(path, bad)
  # Rewritten within one tick of the file system's clock, a file of the same
  # size keeps its mtime: the source's scan cache would not see the change.
  sources._scan_cached.cache_clear()
  return path, intact(offsets, touched, len(bad))


_PROPERTY = dict(deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def intact(offsets, touched, end):
  """Records whose whole frame survived the corruption unchanged."""
  return {i for i in range(N)
          if offsets[i + 1] <= end
          and not any(offsets[i] <= t < offsets[i + 1] for t in touched)}


@settings(max_examples=60, **_PROPERTY)
@given(ops=st.lists(Corruption, min_size=1, max_size=4))
def test_random_corruption_never_loses_a_record(shard, recs, ops):
  path, survived = damaged(shard, ops)
  out = read(path)  # Never raises.
  assert len(out) == N  # Read + skipped = written.
  for i, (data, s) in enumerate(out):
    assert (s == 0) == (data != b'')
    if s == 0:
      assert data in recs
  good = [d for d, s in out if s == 0]
  # Every record that survived is read, in order; nothing is invented.
  survivors = [recs[i] for i in sorted(survived)]
  assert [d for d in good if d in survivors] == survivors
  assert len(good) <= N
  found, _ = reader.count_frames(path)
  assert found <= N and len(read(path, found)) == found


# Through the whole evaluation pipeline, with the shard's record count known
# from metadata as for a TFDS-prepared dataset.


def _fake_source(path):
  return types.SimpleNamespace(
      class_names=('0', '1', '2', '3'), data_dir=os.path.dirname(path),
      split_names=('validation',),
      shards=lambda split: (sources._shard(path, N),),
      num_examples=lambda split: N)


@settings(max_examples=5, **_PROPERTY)
@given(ops=st.lists(Corruption, min_size=1, max_size=3))
def test_pipeline_accounts_for_every_record(shard, ops, monkeypatch_module):
  path, survived = damaged(shard, ops)
  monkeypatch_module.setattr(sources, 'open_source',
                             lambda cfg: _fake_source(path))
  config = R.data_config(eval_pattern=path, num_frames=2, frame_stride=1)
  batches = list(pipeline.build_dataset(
      config, 'validation', train=False, batch_size=N).as_numpy_iterator())
  out = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
  assert sorted(out['video_index']) == list(range(N))
  for i in survived:
    row = list(out['video_index']).index(i)
    assert out['status'][row] == 0 and out['mask'][row] == 1
  skipped = np.bincount(out['status'], minlength=len(pipeline.SKIP_REASONS)
                        + 1)[1:]
  assert int((out['status'] == 0).sum() + skipped.sum()) == N


@pytest.fixture(scope='module')
def monkeypatch_module():
  mp = pytest.MonkeyPatch()
  yield mp
  mp.undo()


def test_missing_file_is_counted_not_raised(tmp_path, capfd):
  out = read(str(tmp_path / 'gone'))
  assert statuses(out) == [status('truncated')] * N
  assert 'cannot read' in capfd.readouterr().err


# ------------------------------------------- Bytes that are not records.


@pytest.mark.parametrize('garbage', [b'junk', b'\x00' * 12, b'x' * 300])
def test_garbage_appended_is_skipped_and_counted(shard, recs, capfd,
                                                 garbage):
  """Shorter than a header ('truncated'), a header of zeros, a long tail
  ('bad_length_crc'): all one broken stretch after the last record."""
  path, raw, offsets = shard
  rewrite(path, raw + garbage)
  sources._scan_cached.cache_clear()
  kind = 'truncated' if len(garbage) < 12 else 'bad_length_crc'
  # Without metadata: one more record, skipped and counted as its kind.
  assert reader.count_frames(path) == (N + 1, kind == 'truncated')
  out = read(path, N + 1)
  assert [d for d, _ in out[:N]] == recs
  assert statuses(out) == [0] * N + [status(kind)]
  assert (f'skipped record at {path} offset {offsets[N]}: {kind}'
          in capfd.readouterr().err)
  # With metadata listing the N records: no record at all. It used to be
  # 'holds 7 records but its dataset_info says 6; re-prepare the dataset',
  # found when evaluation opened the split, after training.
  listed = sources._shard(path, N)
  assert (listed.num_records, listed.lost) == (N, 0)
  out = read(path, N)
  assert [d for d, _ in out] == recs and statuses(out) == [0] * N
  assert capfd.readouterr().err == (
      f'vidjax: ignored garbage at {path} offset {offsets[N]} ({kind}): '
      f'not one of the shard\'s {N} records\n')


def test_garbage_inserted_costs_no_record(shard, recs, capfd):
  path, raw, offsets = shard
  rewrite(path, raw[:offsets[3]] + b'x' * 40 + raw[offsets[3]:])
  out = read(path, N)  # The metadata's count: every record is still read.
  assert [d for d, _ in out] == recs and statuses(out) == [0] * N
  assert (f'ignored garbage at {path} offset {offsets[3]} (bad_length_crc)'
          in capfd.readouterr().err)


def test_garbage_appended_to_a_damaged_shard(shard, recs):
  """A record lost in the middle and garbage at the end: the lost one is
  counted where it was, the garbage is not a record."""
  path, raw, offsets = shard
  raw[offsets[2] + 30] ^= 0x40
  rewrite(path, raw + b'junk')
  out = read(path, N)
  assert statuses(out) == [0, 0, status('bad_data_crc'), 0, 0, 0]
  assert [d for d, s in out if not s] == recs[:2] + recs[3:]


def test_more_sound_records_than_metadata_is_still_an_error(shard):
  path, raw, _ = shard
  rewrite(path, raw + b'junk')
  sources._scan_cached.cache_clear()
  with pytest.raises(Exception, match=f'holds {N} records but its '
                     f'dataset_info says {N - 1}'):
    sources._shard(path, N - 1)


@settings(max_examples=40, **_PROPERTY)
@given(ops=st.lists(Corruption, max_size=2),
       tail=st.binary(min_size=1, max_size=64))
def test_appended_garbage_never_costs_a_record(shard, recs, ops, tail):
  """Whatever else is damaged, bytes appended take no record's place when
  the metadata's count is known."""
  path, survived = damaged(shard, ops)
  with open(path, 'ab') as f:
    f.write(tail)
  out = read(path)
  assert len(out) == N
  good = [d for d, s in out if s == 0]
  survivors = [recs[i] for i in sorted(survived)]
  assert [d for d in good if d in survivors] == survivors
