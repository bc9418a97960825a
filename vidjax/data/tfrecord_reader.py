"""TFRecord shards read whatever their bytes hold: every record accounted for.

A TFRecord file is a chain of frames
`[uint64 length][uint32 masked crc32c(length)][data][uint32 masked crc32c(data)]`.
`tf.data.TFRecordDataset` ends the run on the first bad checksum
(`DataLossError`), and even under `ignore_errors` it gives up the rest of the
shard. This module walks the frames itself, so one bad byte costs one record:

* a frame whose length fails its CRC (`bad_length_crc`: bit rot, a bad
  copy), or whose length passes its CRC but cannot be right because the frame
  would run past the end of the file while sound records follow
  (`garbage_length`: a writer that lied), is skipped by searching forward,
  byte by byte, for the next offset where a whole frame checks out (length
  CRC, fits in the file, data CRC);
* a frame whose data fails its CRC (`bad_data_crc`) is skipped by its length,
  which passed its own CRC;
* a file that ends inside a frame (`truncated`): the interrupted copy;
* bytes after the last record (`trailing garbage`: a copy that appended,
  two files run together) are one broken stretch like any other: without
  metadata it is counted as a skipped record of its kind (the reader cannot
  tell it from a cut last record); with metadata, when every record the
  metadata lists is found without it, it is no record at all: logged with
  its offset and not counted (`read_shard`'s `count`);
* data that is not a SequenceExample (`not_sequence_example`), or one without
  the frames or the label (`missing_keys`), is checked here too, with
  protobuf, so the pipeline's steps only ever see well-formed records.

Each skipped record is one element with its kind instead of its bytes, so a
shard always yields exactly its record count (the dataset's metadata, or the
frames `count_frames` finds), a skip never shifts the records after it, and
resuming stays exact. Where a corrupt stretch swallowed records whose count
the metadata knows, the missing ones are reported under the kind of the
corruption that hid them (`truncated` for a short file); where the file holds
more broken stretches than the metadata leaves room for (bytes inserted or
appended, hiding no record), the last of them are logged as garbage and not
counted, so every sound record is still read. Read + skipped = written,
always.

The walk reads only the 12-byte headers (plus the data of a candidate frame
while resynchronising), so counting a local shard costs a seek per record.
Checksums are crc32c through google-crc32c's C implementation.
"""

from __future__ import annotations

from collections.abc import Iterator
import dataclasses
import struct
import sys

import google_crc32c
from google.protobuf import message as protobuf_message
import numpy as np
import tensorflow as tf

from vidjax.data.keys import IMAGE_KEY, LABEL_INDEX_KEY

# Why a record could not be read; the pipeline's skip reasons start with these.
FRAMING_KINDS = ('bad_length_crc', 'garbage_length', 'truncated',
                 'bad_data_crc')
CONTENT_KINDS = ('not_sequence_example', 'missing_keys')
KINDS = FRAMING_KINDS + CONTENT_KINDS

_HEADER = 12  # uint64 length + uint32 masked CRC of the length.
_FOOTER = 4  # uint32 masked CRC of the data.
# Bytes searched per read while resynchronising after a broken header.
_RESYNC_CHUNK = 1 << 20


def masked_crc(data: bytes) -> int:
  """TFRecord's masked crc32c (rotate right by 15, add a constant)."""
  crc = google_crc32c.value(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class Frame:
  offset: int  # Byte offset of the frame (or of the broken stretch).
  length: int  # Data bytes; 0 for a broken frame.
  kind: str | None  # None: the header checks out (data not yet checked).


def _header(f, pos: int) -> bytes:
  f.seek(pos)
  return f.read(_HEADER)


def _parse_header(header: bytes, pos: int, size: int) -> tuple[int, bool, bool]:
  """(length, length CRC ok, frame fits in the file)."""
  length, crc = struct.unpack('<QI', header)
  ok = masked_crc(header[:8]) == crc
  return length, ok, pos + _HEADER + length + _FOOTER <= size


def _data_ok(f, pos: int, length: int) -> bool:
  f.seek(pos + _HEADER)
  body = f.read(length + _FOOTER)
  if len(body) != length + _FOOTER:
    return False
  (crc,) = struct.unpack('<I', body[length:])
  return masked_crc(body[:length]) == crc


def _candidates(chunk: bytes, base: int, size: int) -> np.ndarray:
  """Offsets in `chunk` whose length field would fit in the file.

  A vectorised filter ahead of the CRC checks: most bytes of a JPEG-filled
  record fail it, so the byte-by-byte search runs at numpy speed.
  """
  n = len(chunk) - _HEADER + 1
  if n <= 0:
    return np.zeros([0], np.int64)
  b = np.frombuffer(chunk, np.uint8).astype(np.uint64)
  length = np.zeros(n, np.uint64)
  for k in range(8):
    length |= b[k:k + n] << np.uint64(8 * k)
  room = size - (base + np.arange(n)) - _HEADER - _FOOTER
  return np.flatnonzero(length <= np.maximum(room, 0).astype(np.uint64))


def next_sound_frame(path: str, size: int, start: int) -> int | None:
  """The first offset >= start where a whole, sound frame begins.

  Not cached: a file rewritten within one tick of the file system's clock
  keeps its size and mtime, and a stale offset would misread it. The numpy
  prefilter keeps the search to milliseconds per megabyte.
  """
  with tf.io.gfile.GFile(path, 'rb') as f:
    pos = start
    while pos <= size - _HEADER - _FOOTER:
      f.seek(pos)
      chunk = f.read(min(_RESYNC_CHUNK + _HEADER - 1, size - pos))
      for i in _candidates(chunk, pos, size):
        i = int(i)
        q = pos + i
        length, ok, fits = _parse_header(chunk[i:i + _HEADER], q, size)
        if ok and fits and _data_ok(f, q, length):
          return q
      pos += max(len(chunk) - _HEADER + 1, 1)
  return None


def walk(f, path: str, stat) -> Iterator[Frame]:
  """The frames of `path` (open as `f`; `stat` its tf.io.gfile.stat), in order.

  Sound headers come back with kind None; every broken stretch as one Frame
  with its kind, after which the walk resumes at the next sound frame.
  """
  size, pos = stat.length, 0
  while pos < size:
    header = _header(f, pos)
    if len(header) < _HEADER:
      yield Frame(pos, 0, 'truncated')
      return
    length, ok, fits = _parse_header(header, pos, size)
    if ok and fits:
      yield Frame(pos, length, None)
      pos += _HEADER + length + _FOOTER
      continue
    nxt = next_sound_frame(path, size, pos + 1)
    if not ok:
      kind = 'bad_length_crc'
    else:  # A length that passes its CRC but runs past the end of the file:
      # the file was cut, unless sound records follow (then it lies).
      kind = 'truncated' if nxt is None else 'garbage_length'
    yield Frame(pos, 0, kind)
    if nxt is None:
      return
    pos = nxt


@dataclasses.dataclass(frozen=True)
class Scan:
  """What a walk of a whole file found."""

  frames: int  # Sound frames plus broken stretches: records, sound or not.
  sound: int  # Frames whose header checks out.
  truncated: bool  # The file ends inside a frame.
  tail: Frame | None  # The last frame when it is a broken stretch.


def scan(path: str) -> Scan:
  """Walks the headers of the file at `path` (a seek per record)."""
  stat = tf.io.gfile.stat(path)
  frames = sound = 0
  last = None
  with tf.io.gfile.GFile(path, 'rb') as f:
    for last in walk(f, path, stat):
      frames += 1
      sound += last.kind is None
  tail = last if last is not None and last.kind is not None else None
  return Scan(frames, sound, last is not None and last.kind == 'truncated',
              tail)


def count_frames(path: str) -> tuple[int, bool]:
  """(records in the file, sound or not; whether the file ends mid-frame)."""
  s = scan(path)
  return s.frames, s.truncated


def content_kind(data: bytes) -> str | None:
  """None for a SequenceExample with frames and a label, else the kind."""
  try:
    seq = tf.train.SequenceExample.FromString(data)
  except protobuf_message.DecodeError:
    return 'not_sequence_example'
  if (IMAGE_KEY not in seq.feature_lists.feature_list
      or LABEL_INDEX_KEY not in seq.context.feature):
    return 'missing_keys'
  return None


def _report(path: str, offset: int, kind: str):
  print(f'vidjax: skipped record at {path} offset {offset}: {kind}',
        file=sys.stderr, flush=True)


def _records(f, path: str, stat, count: int) -> Iterator[Frame]:
  """The walk's frames, less broken stretches that cannot be records.

  At the first broken stretch the rest of the file's headers are walked
  ahead (damaged shards only): when the file holds more frames than `count`
  leaves room for, the last broken stretches (garbage appended or inserted,
  hiding no record) are logged and left out, so no sound record is lost.
  """
  frames = walk(f, path, stat)
  seen = 0
  for fr in frames:
    if fr.kind is None:
      seen += 1
      yield fr
      continue
    rest = [fr, *frames]
    excess = seen + len(rest) - count
    broken = [i for i, r in enumerate(rest) if r.kind is not None]
    dropped = set(broken[len(broken) - excess:]) if excess > 0 else set()
    for i, r in enumerate(rest):
      if i in dropped:
        print(f'vidjax: ignored garbage at {path} offset {r.offset} '
              f'({r.kind}): not one of the shard\'s {count} records',
              file=sys.stderr, flush=True)
      else:
        yield r
    return


def read_shard(path: str, count: int) -> Iterator[tuple[bytes, int]]:
  """Exactly `count` (data, status) pairs of the shard at `path`.

  status 0: `data` is a sound record; i + 1: skipped as KINDS[i], `data` is
  empty. Skips are logged on stderr with the shard and the byte offset.
  """
  yielded, last_kind = 0, 'truncated'
  try:
    stat = tf.io.gfile.stat(path)
    with tf.io.gfile.GFile(path, 'rb') as f:
      for fr in _records(f, path, stat, count):
        if yielded == count:
          return
        kind = fr.kind
        data = b''
        if kind is None:
          f.seek(fr.offset + _HEADER)
          body = f.read(fr.length + _FOOTER)
          (crc,) = struct.unpack('<I', body[fr.length:])
          data = body[:fr.length]
          kind = ('bad_data_crc' if masked_crc(data) != crc
                  else content_kind(data))
        if kind is not None:
          _report(path, fr.offset, kind)
          last_kind, data = kind, b''
        yield data, 0 if kind is None else KINDS.index(kind) + 1
        yielded += 1
  except (OSError, tf.errors.OpError) as e:
    # The file vanished or cannot be read: what remains is unreadable.
    print(f'vidjax: cannot read {path} after {yielded} records: '
          f'{getattr(e, "message", e)}', file=sys.stderr, flush=True)
  if yielded < count:
    print(f'vidjax: {path}: the last {count - yielded} of its {count} '
          f'records are missing, skipped as {last_kind}', file=sys.stderr,
          flush=True)
  for _ in range(count - yielded):
    yield b'', KINDS.index(last_kind) + 1


def dataset(path, count) -> tf.data.Dataset:
  """`read_shard` as a tf.data source; `path` and `count` may be tensors."""
  return tf.data.Dataset.from_generator(
      lambda p, n: read_shard(p.decode() if isinstance(p, bytes) else p,
                              int(n)),
      args=(path, count),
      output_signature=(tf.TensorSpec([], tf.string),
                        tf.TensorSpec([], tf.int32)))
