"""A cheap look at one TFRecord shard: is it there, and does it start right.

`check_file` answers, as one VidjaxError line naming the shard, what no
reader can skip its way past: a shard that is missing, a directory, cannot
be opened or read, is empty while records are expected of it, or is not a
TFRecord file at all (no sound frame anywhere). It reads the first 12 bytes
(the first record's length and its CRC), nothing more when they check out,
so a split of thousands of 100 MB shards is checked in a request or two per
shard. Damage inside a sound file is not its business: the reader skips and
counts it (`tfrecord_reader`).

`first_labels` reads the labels of a shard's first records from the start
of their data (the SequenceExample's context comes first, the frames after
it are skipped), so comparing a split's labels with `num_classes` costs a
few kilobytes per shard, not its clips.
"""

from __future__ import annotations

import os
import stat as stat_lib
import struct

from google.protobuf import message as protobuf_message
import tensorflow as tf

from vidjax.data import tfrecord_reader
from vidjax.data.keys import LABEL_INDEX_KEY
from vidjax.errors import VidjaxError

_HEADER = 12
# Bytes of a record's data read for its label: the context (label, text,
# file name) is a few hundred bytes; the frames after it are not read.
_PREFIX = 1 << 16
# A record whose context does not come first is parsed whole up to this.
_WHOLE = 1 << 26


def _message(e: Exception) -> str:
  return str(getattr(e, 'message', None) or getattr(e, 'strerror', None)
             or e)


def check_file(path: str, expected: int | None = None) -> None:
  """Raises VidjaxError (one line) unless `path` is a readable TFRecord file.

  `expected`: the records its metadata lists (None: unknown). An empty file
  is an error unless the metadata expects no records of it.
  """
  try:
    if not tf.io.gfile.exists(path):
      raise VidjaxError(f'shard {path} does not exist')
    if tf.io.gfile.isdir(path):
      raise VidjaxError(f'shard {path} is a directory, not a TFRecord file')
    # A FIFO or a device would block or never end; only a file is a shard.
    if '://' not in path and not stat_lib.S_ISREG(os.stat(path).st_mode):
      raise VidjaxError(f'shard {path} is not a regular file')
    size = tf.io.gfile.stat(path).length
    with tf.io.gfile.GFile(path, 'rb') as f:
      header = f.read(_HEADER)
  except (OSError, tf.errors.OpError) as e:
    raise VidjaxError(f'shard {path} cannot be read: {_message(e)}') from None
  if size == 0:
    if expected == 0:
      return
    raise VidjaxError(f'shard {path} is empty (0 bytes)'
                      + (f'; its metadata lists {expected} records'
                         if expected else ''))
  if len(header) == _HEADER and _header_ok(header, size):
    return
  # A broken first header: damage at the start (the reader skips it) or
  # not a TFRecord file at all. Only a search can tell.
  if tfrecord_reader.next_sound_frame(path, size, 1) is None:
    raise VidjaxError(
        f'shard {path}: no record in its {size} bytes checks out (not a '
        'TFRecord file, a compressed one, or cut inside its first record)')


def _header_ok(header: bytes, size: int) -> bool:
  length, crc = struct.unpack('<QI', header)
  return (tfrecord_reader.masked_crc(header[:8]) == crc
          and _HEADER + length + 4 <= size)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
  """(value, position after it) of the protobuf varint at `pos`."""
  value = shift = 0
  while True:
    if pos >= len(data) or shift > 63:
      raise ValueError('varint runs past the data')
    byte = data[pos]
    value |= (byte & 0x7F) << shift
    pos += 1
    shift += 7
    if not byte & 0x80:
      return value, pos


def _label_of(context: tf.train.Features) -> int | None:
  feature = context.feature.get(LABEL_INDEX_KEY)
  if feature is None:
    return None
  values = feature.int64_list.value
  return int(values[0]) if values else None


def first_labels(path: str, n: int = 4) -> list[int | None]:
  """Labels of the first `n` records of `path`, in order (None: no label).

  Stops early at the end of the file or at a header that does not check
  out: damage is the reader's business, which skips and counts it.
  """
  labels = []
  try:
    size = tf.io.gfile.stat(path).length
    with tf.io.gfile.GFile(path, 'rb') as f:
      pos = 0
      while len(labels) < n:
        f.seek(pos)
        header = f.read(_HEADER)
        if len(header) < _HEADER or not _header_ok(header, size - pos):
          break
        (length,) = struct.unpack('<Q', header[:8])
        labels.append(_label(f, length))
        pos += _HEADER + length + 4
  except (OSError, tf.errors.OpError):
    pass
  return labels


def _label(f, length: int) -> int | None:
  """The label of the record whose data `f` is positioned at."""
  prefix = f.read(min(length, _PREFIX))
  try:
    # SequenceExample field 1 (the context), length-delimited: tag 0x0a.
    if prefix[:1] == b'\x0a':
      size, start = _varint(prefix, 1)
      if start + size <= len(prefix):
        return _label_of(tf.train.Features.FromString(
            prefix[start:start + size]))
    if length > _WHOLE:
      return None
    data = prefix + f.read(length - len(prefix))
    return _label_of(tf.train.SequenceExample.FromString(data).context)
  except (ValueError, protobuf_message.DecodeError):
    return None
