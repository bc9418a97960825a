"""Where the pipeline's records come from, and how many of them are readable.

Two kinds of source feed `vidjax.data.pipeline`, with one interface:

* a vidjax TFDS builder (`config.data.name` such as 'moving_shapes/tiny' or
  'kinetics400'), prepared on first use; split sizes come from its
  `dataset_info.json`;
* TFRecords a user already has (`config.data.name = 'tfrecord'`), in the
  DMVR/Scenic SequenceExample layout (`vidjax.data.formats`), given as a file
  pattern per split (`train_pattern`, `eval_pattern`), `num_classes` and
  optionally `class_names_file` (one name per line, line i = class i).

Truncated shards (an interrupted copy is the usual cause) are found before any
record is read: a TFRecord file is a chain of `[uint64 length][uint32 crc]
[data][uint32 crc]` frames, so walking the length fields with seeks counts
the complete records without reading their bytes. The pipeline then reads
only those (`TFRecordDataset(path).take(n)`) and never hits the broken tail
mid-epoch; the loss is reported in the run summary. Local files are always
walked (a few microseconds per record); remote files (gs://...) only when
their count is not in the metadata, since every seek there is a request.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import struct

from absl import logging
import tensorflow as tf

from vidjax.errors import VidjaxError

# The dataset name that selects existing TFRecords instead of a builder.
TFRECORD = 'tfrecord'

_HEADER = 12  # uint64 length + uint32 masked CRC of the length.
_FOOTER = 4  # uint32 masked CRC of the data.


@dataclasses.dataclass(frozen=True)
class Shard:
  path: str
  num_records: int  # Complete records: what the pipeline reads.
  expected: int | None  # From metadata; None when nobody recorded it.
  truncated: bool  # The file ends inside a record.

  @property
  def lost(self) -> int | None:
    """Records the metadata promises but the file lacks (None: unknown)."""
    if self.expected is None:
      return None
    return max(self.expected - self.num_records, 0)


def _is_remote(path: str) -> bool:
  return '://' in path


@functools.lru_cache(maxsize=4096)
def _scan_cached(path: str, size: int, mtime: float) -> tuple[int, bool]:
  del mtime  # Part of the cache key only: a rewritten file is rescanned.
  count, pos = 0, 0
  with tf.io.gfile.GFile(path, 'rb') as f:
    while pos < size:
      if size - pos < _HEADER:
        return count, True
      f.seek(pos)
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        return count, True
      (length,) = struct.unpack('<Q', header[:8])
      end = pos + _HEADER + length + _FOOTER
      if end > size:
        return count, True
      count, pos = count + 1, end
  return count, False


def scan_tfrecord(path: str) -> tuple[int, bool]:
  """(complete records, whether the file ends inside a record)."""
  stat = tf.io.gfile.stat(path)
  return _scan_cached(path, stat.length, stat.mtime_nsec)


def _shard(path: str, expected: int | None) -> Shard:
  if expected is not None and _is_remote(path):
    return Shard(path, expected, expected, False)
  count, truncated = scan_tfrecord(path)
  if expected is not None and count > expected:
    # More records than the metadata says: the file is not the one described.
    raise VidjaxError(f'{path} holds {count} records but its dataset_info '
                      f'says {expected}; re-prepare the dataset')
  shard = Shard(path, count, expected, truncated)
  if truncated or (shard.lost or 0) > 0:
    lost = 'an unknown number of' if shard.lost is None else str(shard.lost)
    logging.warning('%s is truncated after %d complete records (%s records '
                    'lost); reading those %d', path, count, lost, count)
  return shard


class BuilderSource:
  """A vidjax TFDS builder's prepared splits."""

  def __init__(self, builder):
    self._builder = builder
    self.data_dir = builder.data_dir
    self.class_names = tuple(builder.class_names)
    self.split_names = tuple(builder.split_names)

  def num_examples(self, split: str) -> int:
    return self._builder.num_examples(split)

  @functools.lru_cache(maxsize=None)
  def shards(self, split: str) -> tuple[Shard, ...]:
    return tuple(_shard(path, n)
                 for path, n in self._builder.split_shards(split))


def _glob(pattern: str, key: str) -> list[str]:
  files = []
  for part in pattern.split(','):
    part = part.strip()
    if part:
      files.extend(sorted(tf.io.gfile.glob(part)))
  if not files:
    raise VidjaxError(f'config.data.{key}={pattern!r} matches no files')
  return files


def _read_class_names(path: str) -> tuple[str, ...]:
  try:
    with tf.io.gfile.GFile(path) as f:
      names = [line.strip() for line in f]
  except (OSError, tf.errors.OpError) as e:
    raise VidjaxError(f'cannot read config.data.class_names_file {path}: '
                      f'{getattr(e, "message", e)}') from None
  while names and not names[-1]:
    names.pop()
  return tuple(names)


class TFRecordSource:
  """Existing DMVR/Scenic TFRecords: one file pattern per split.

  `config.data.train_split` names the files of `train_pattern`,
  `config.data.eval_split` those of `eval_pattern`. Split sizes are the
  complete records in the files (no metadata exists to compare against).
  """

  def __init__(self, data_config):
    patterns = {}
    for split_key, pattern_key in (('train_split', 'train_pattern'),
                                   ('eval_split', 'eval_pattern')):
      pattern = data_config.get(pattern_key)
      if pattern:
        patterns[data_config[split_key]] = (pattern, pattern_key)
    if not patterns:
      raise VidjaxError("config.data.name='tfrecord' needs "
                        'config.data.train_pattern and/or eval_pattern')
    self._patterns = patterns
    self.split_names = tuple(sorted(patterns))
    self.data_dir = os.path.dirname(next(iter(patterns.values()))[0])
    num_classes = data_config.get('num_classes')
    names_file = data_config.get('class_names_file')
    if names_file:
      names = _read_class_names(names_file)
      if num_classes is not None and num_classes != len(names):
        raise VidjaxError(
            f'config.data.num_classes={num_classes} but {names_file} lists '
            f'{len(names)} class names')
    elif num_classes is None or num_classes < 1:
      raise VidjaxError("config.data.name='tfrecord' needs "
                        'config.data.num_classes (or class_names_file)')
    else:
      names = tuple(str(i) for i in range(num_classes))
    self.class_names = names

  def _check_split(self, split: str):
    if split not in self._patterns:
      raise VidjaxError(
          f'Dataset tfrecord has no split {split!r}; available splits: '
          f'{", ".join(self.split_names)} (set config.data.train_pattern / '
          f'eval_pattern)')

  @functools.lru_cache(maxsize=None)
  def shards(self, split: str) -> tuple[Shard, ...]:
    self._check_split(split)
    pattern, key = self._patterns[split]
    return tuple(_shard(path, None) for path in _glob(pattern, key))

  def num_examples(self, split: str) -> int:
    return sum(s.num_records for s in self.shards(split))


def open_source(data_config):
  """The source `data_config.name` selects (builders are prepared first)."""
  if data_config.name == TFRECORD:
    return TFRecordSource(data_config)
  # Imported here: builders import TFDS's heavy machinery, which reading
  # existing TFRecords does not need.
  from vidjax.data import builders  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  builder = builders.get_builder(data_config.name, data_config.get('data_dir'))
  # Renders synthetic data on first use; a no-op once prepared. With several
  # processes on one shared data_dir, prepare once before starting them.
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return BuilderSource(builder)
