"""Where the pipeline's records come from, and how many of them are readable.

Two kinds of source feed `vidjax.data.pipeline`, with one interface:

* a vidjax TFDS builder (`config.data.name` such as 'moving_shapes/tiny' or
  'kinetics400'); split sizes come from its `dataset_info.json`. Opening one
  never writes it: `prepare` renders an embedded dataset, once, from one
  process (the trainer's process 0, before the others open it);
* TFRecords a user already has (`config.data.name = 'tfrecord'`), in the
  DMVR/Scenic SequenceExample layout (`vidjax.data.formats`), given as a file
  pattern per split (`train_pattern`, `eval_pattern`), `num_classes` and
  optionally `class_names_file` (one name per line, line i = class i).

Each shard's record count is fixed before any record is read, because the
pipeline's resume arithmetic depends on it: the metadata's count for a
builder, else the frames `tfrecord_reader` finds walking the file's length
fields (a seek per record, checksums of the 12-byte headers only). Local
files are always walked, so a shard shorter than its metadata is reported at
once; remote files (gs://...) only when their count is not in the metadata,
since every seek there is a request. The reader then yields exactly that
many records per shard, skipped ones included (`tfrecord_reader`). A file
walked is checked first (`shard_check`): missing, a directory, unreadable,
empty or no TFRecord file is one VidjaxError line; broken stretches the
metadata leaves no room for (garbage appended) are no records. Every shard a
run reads, remote ones too, is checked before compiling (`preflight`).
"""

from __future__ import annotations

import dataclasses
import functools
import os

from absl import logging
import tensorflow as tf

from vidjax.data import shard_check
from vidjax.data import tfrecord_reader
from vidjax.errors import VidjaxError

# The dataset name that selects existing TFRecords instead of a builder.
TFRECORD = 'tfrecord'

@dataclasses.dataclass(frozen=True)
class Shard:
  path: str
  num_records: int  # Records the pipeline yields (skipped ones included).
  expected: int | None  # From metadata; None when nobody recorded it.
  found: int | None = None  # Frames in the file; None: not walked (remote).

  @property
  def lost(self) -> int | None:
    """Records the metadata promises but the file lacks (None: unknown)."""
    if self.expected is None or self.found is None:
      return None
    return max(self.expected - self.found, 0)


def _is_remote(path: str) -> bool:
  return '://' in path


@functools.lru_cache(maxsize=4096)
def _scan_cached(path: str, size: int, mtime: int) -> tfrecord_reader.Scan:
  del size, mtime  # Part of the cache key only: a rewritten file is rescanned.
  return tfrecord_reader.scan(path)


def _scan(path: str, expected: int | None = None) -> tfrecord_reader.Scan:
  """The file's frames, sound ones, and how it ends (`tfrecord_reader.scan`).

  The file is checked first (`shard_check`): a missing file, a directory or
  one that cannot be read is a VidjaxError, not a traceback.
  """
  shard_check.check_file(path, expected)
  stat = tf.io.gfile.stat(path)
  return _scan_cached(path, stat.length, stat.mtime_nsec)


def scan_tfrecord(path: str) -> tuple[int, bool]:
  """(records in the file, sound or not; whether it ends inside a record)."""
  scan = _scan(path)
  return scan.frames, scan.truncated


def _shard(path: str, expected: int | None) -> Shard:
  if expected is not None and _is_remote(path):
    return Shard(path, expected, expected)
  scan = _scan(path, expected)
  if expected is not None and scan.sound > expected:
    # More sound records than the metadata says: not the file described.
    raise VidjaxError(f'{path} holds {scan.sound} records but its '
                      f'dataset_info says {expected}; re-prepare the dataset')
  count = scan.frames
  garbage = expected is not None and count > expected
  if garbage:
    # Broken stretches the metadata leaves no room for hid no record:
    # garbage appended or inserted. The reader logs each and reads on.
    logging.warning('%s holds %d stretch(es) of bytes that are not records '
                    'besides its %d records (garbage appended or inserted); '
                    'ignored', path, count - expected, expected)
    count = expected
  shard = Shard(path, count if expected is None else expected, expected,
                found=count)
  if (scan.truncated and not garbage) or (shard.lost or 0) > 0:
    lost = 'an unknown number of' if shard.lost is None else str(shard.lost)
    logging.warning('%s is truncated after %d records (%s records lost); '
                    'each lost record is counted as skipped', path, count,
                    lost)
  return shard


class BuilderSource:
  """A vidjax TFDS builder's prepared splits."""

  def __init__(self, builder):
    self._builder = builder
    self.data_dir = builder.data_dir
    self.class_names = tuple(builder.class_names)
    self.split_names = tuple(builder.split_names)
    # A dataset prepared before builders recorded their JPEG quality has a
    # metadata.json without it; the builder's own constant is what wrote it
    # (raw-video builders record theirs per config, which wins).
    self.metadata = {
        'jpeg_quality': getattr(builder, 'JPEG_QUALITY', None),
        **{k: v for k, v in (builder.info.metadata or {}).items()
           if k != 'format'}}

  def num_examples(self, split: str) -> int:
    return self._builder.num_examples(split)

  @functools.lru_cache(maxsize=None)
  def shards(self, split: str) -> tuple[Shard, ...]:
    return tuple(_shard(path, n)
                 for path, n in self._builder.split_shards(split))

  def shard_files(self, split: str) -> list[tuple[str, int | None]]:
    """(path, records its metadata lists) per shard, without reading any."""
    return list(self._builder.split_shards(split))


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
  if not names:
    raise VidjaxError(f'config.data.class_names_file {path} lists no class '
                      'names (one per line, line i = class i)')
  blank = [i for i, name in enumerate(names) if not name]
  if blank:
    raise VidjaxError(f'config.data.class_names_file {path}: line '
                      f'{blank[0] + 1} is blank; every class needs a name')
  seen = set()
  for name in names:
    if name in seen:
      raise VidjaxError(f'config.data.class_names_file {path} lists '
                        f'{name!r} twice; class i is line i, one name each')
    seen.add(name)
  return tuple(names)


class TFRecordSource:
  """Existing DMVR/Scenic TFRecords: one file pattern per split.

  `config.data.train_split` names the files of `train_pattern`,
  `config.data.eval_split` those of `eval_pattern`. Split sizes are the
  records found in the files, skipped ones included (no metadata exists to
  compare against: a record a truncation hid entirely is not known of).
  """

  def __init__(self, data_config):
    patterns = {}
    for split_key, pattern_key in (('train_split', 'train_pattern'),
                                   ('eval_split', 'eval_pattern')):
      pattern = data_config[pattern_key]
      if pattern:
        patterns[data_config[split_key]] = (pattern, pattern_key)
    if not patterns:
      raise VidjaxError("config.data.name='tfrecord' needs "
                        'config.data.train_pattern and/or eval_pattern')
    self._patterns = patterns
    self.split_names = tuple(sorted(patterns))
    self.data_dir = os.path.dirname(next(iter(patterns.values()))[0])
    num_classes = data_config.num_classes
    names_file = data_config.class_names_file
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

  def shard_files(self, split: str) -> list[tuple[str, int | None]]:
    """(path, None) per shard: no metadata lists their records."""
    self._check_split(split)
    pattern, key = self._patterns[split]
    return [(path, None) for path in _glob(pattern, key)]


def _builder(data_config):
  # Imported here: builders import TFDS's heavy machinery, which reading
  # existing TFRecords does not need.
  from vidjax.data import builders  # pylint: disable=g-import-not-at-top
  return builders.get_builder(data_config.name, data_config.data_dir)


def _is_prepared(builder) -> bool:
  # TFDS's `is_prepared` logs a warning for the half-made folder that merely
  # constructing a builder leaves; its dataset_info.json is what TFDS
  # writes last, so its presence is the same test, without the noise.
  return tf.io.gfile.exists(os.path.join(os.fspath(builder.data_path),
                                         'dataset_info.json'))


def is_rendered(data_config) -> bool:
  """Whether vidjax writes this dataset itself (the embedded, synthetic ones)
  rather than the user (`python -m vidjax.data.prepare`, or own TFRecords).

  Decided by the name alone, so every process of a run agrees on it whatever
  the disk holds at the moment each one looks.
  """
  return data_config.name != TFRECORD and _is_rendered(_builder(data_config))


def _is_rendered(builder) -> bool:
  from vidjax.data.builders import raw_video  # pylint: disable=g-import-not-at-top
  return not isinstance(builder, raw_video.RawVideoBuilder)


def prepare(data_config) -> bool:
  """Renders an embedded dataset that is not on disk yet; True if it wrote.

  Datasets the user prepares are left alone (`open_source` names the command
  when they are missing). Call it once, from one process, before any
  `open_source`: the trainer does so from process 0 while the others wait.
  """
  if data_config.name == TFRECORD:
    return False
  builder = _builder(data_config)
  if not _is_rendered(builder) or _is_prepared(builder):
    return False
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return True


def open_source(data_config):
  """The source `data_config.name` selects, read-only (see `prepare`)."""
  if data_config.name == TFRECORD:
    return TFRecordSource(data_config)
  builder = _builder(data_config)
  if not _is_prepared(builder):
    root = os.fspath(builder.data_dir_root)
    if not _is_rendered(builder):
      how = (f'convert the raw videos first: python -m vidjax.data.prepare '
             f'{builder.name} --manual_dir=DIR --data_dir={root}')
    else:
      how = ('it is rendered by the trainer (vidjax.main) before training, or '
             'by vidjax.data.sources.prepare')
    raise VidjaxError(f'dataset {data_config.name} is not prepared under '
                      f'{root}; {how}')
  return BuilderSource(builder)
