"""A TFDS builder base class that writes DMVR SequenceExample TFRecords.

Why not `tfds.core.GeneratorBasedBuilder`: its split builder always serialises
examples as `tf.train.Example` through the feature connectors, and a video
stored that way is not the DMVR layout other code (and users' existing Kinetics
TFRecords) use. So `DmvrBuilder` subclasses the abstract
`tfds.core.DatasetBuilder` and implements `_download_and_prepare` itself, but
still writes through TFDS's own `Writer` (`tensorflow_datasets.core.writer`)
with a SequenceExample serializer. That keeps everything else TFDS does:

* shards named `<name>-<split>.tfrecord-00000-of-0000N` under
  `<data_dir>/<name>/<config>/<version>/`, written into a temporary directory
  that is renamed only once complete;
* TFDS's deterministic hash shuffle of the examples by key (spilling to disk
  for datasets larger than memory), so class-sorted sources such as the
  Kinetics CSVs end up mixed across and within shards;
* `dataset_info.json` with per-split shard lengths and bytes, the class names
  as a `ClassLabel` feature (`features.json` + `label.labels.txt`), metadata;
* `download_and_prepare()` being a no-op once the version directory exists.

The feature connectors in `info.features` describe what `as_dataset()` returns
(decoded videos), not the on-disk encoding, so read the shards with this
class, with `vidjax.data.pipeline`, or with plain `tf.data` +
`formats.parse_sequence_example`; `tfds.builder_from_directory` (which
assumes `tf.train.Example`) cannot read them.

Subclasses provide the class list and, per split, a generator of
`(key, fields)` pairs; see `DmvrBuilder._split_generators`.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
import dataclasses
import inspect
import os
from typing import Any

from etils import epath
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import writer as tfds_writer
from tensorflow_datasets.core.utils import shard_utils

from vidjax.data import formats
from vidjax.data import transforms
from vidjax.errors import VidjaxError

# Identifies our on-disk layout in `metadata.json`.
FORMAT_NAME = 'dmvr_sequence_example'


@dataclasses.dataclass(frozen=True)
class _SequenceExampleSerializer(example_serializer.Serializer):
  """Turns a builder's `fields` dict into serialized DMVR SequenceExample bytes.

  Plugs into TFDS's `Writer`, which only needs `serialize_example`.
  """

  class_names: tuple[str, ...] = ()
  jpeg_quality: int = 90

  def serialize_example(self, example: Mapping[str, Any]) -> bytes:
    fields = dict(example)
    if 'frames' in fields:
      if 'encoded_frames' in fields:
        raise VidjaxError('Give either "frames" or "encoded_frames", not both.')
      frames = fields.pop('frames')
      fields['encoded_frames'] = [
          formats.encode_jpeg(f, self.jpeg_quality) for f in frames
      ]
    self._check_label(fields['label'], fields['label_text'], fields['filename'])
    return formats.make_sequence_example(**fields).SerializeToString()

  def _check_label(self, label: int, text: str, filename: str):
    # DMVR's known bug is a label map that differs between splits; checking
    # every record against the one fixed class list rules it out.
    if label == formats.MISSING_LABEL and not text:
      return
    if not 0 <= label < len(self.class_names):
      raise VidjaxError(
          f'{filename}: label {label} outside [0, {len(self.class_names)})'
      )
    if self.class_names[label] != text:
      raise VidjaxError(
          f'{filename}: label {label} is {self.class_names[label]!r} in the '
          f'class list but the record says {text!r}'
      )


class DmvrBuilder(tfds.core.DatasetBuilder):
  """Base for vidjax datasets: DMVR SequenceExample TFRecords through TFDS.

  Subclasses set `VERSION` (and optionally `BUILDER_CONFIGS`, `DESCRIPTION`,
  `HOMEPAGE`, `CITATION`, `JPEG_QUALITY`) and implement `_class_names` and
  `_split_generators`. Optional hooks: `_num_shards` and `_metadata`.
  """

  DESCRIPTION = ''
  HOMEPAGE: str | None = None
  CITATION: str | None = None
  # JPEG quality for frames given as uint8 arrays.
  JPEG_QUALITY = 90

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10's version imports `importlib_resources`, which it declares
    # only for Python < 3.9, so it fails on our Python. The class's source file
    # is what it computes for an ordinary installed package anyway.
    return epath.Path(inspect.getfile(cls))

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    # The DMVR layout is TFRecord files; DMVR's and Scenic's readers, which
    # users' existing data targets, read nothing else.
    self.info.set_file_format(tfds.core.FileFormat.TFRECORD)

  # ---------------------------------------------------------------------------
  # What subclasses provide.
  # ---------------------------------------------------------------------------

  @abc.abstractmethod
  def _class_names(self) -> Sequence[str] | None:
    """The fixed, ordered class list; `clip/label/index` indexes into it.

    None when it is only known once the source is read (see `RawVideoBuilder`).
    """

  @abc.abstractmethod
  def _split_generators(
      self, dl_manager: tfds.download.DownloadManager
  ) -> Mapping[str, Iterable[tuple[int | str, Mapping[str, Any]]]]:
    """Returns {split name: iterable of (key, fields)}.

    `key` is a unique int or str within the split (TFDS hashes it to shuffle
    the records deterministically). `fields` are the keyword arguments of
    `formats.make_sequence_example`, except that the frames may be given as
    `frames`, a uint8 [T, H, W, 3] array (or sequence of [H, W, 3] arrays),
    instead of `encoded_frames`; those are JPEG-encoded at `JPEG_QUALITY`.
    Use label `formats.MISSING_LABEL` with label_text '' for unlabelled clips.

    Args:
      dl_manager: TFDS download manager (for `manual_dir` or downloads).
    """

  def _num_shards(self, split: str) -> int | None:
    """Shards to write for `split`; None lets TFDS choose from the byte size.

    Override when readers need a minimum (multi-host file sharding needs at
    least one shard per process).
    """
    del split
    return None

  def _metadata(self) -> dict[str, Any]:
    """Extra JSON-serialisable facts for `metadata.json` (e.g. frame size)."""
    return {}

  # ---------------------------------------------------------------------------
  # TFDS hooks.
  # ---------------------------------------------------------------------------

  def _label_feature(self) -> tfds.features.ClassLabel:
    names = self._class_names()
    if names is None:
      # Builders that learn their classes while preparing (from annotation
      # files) set them then; prepared datasets load label.labels.txt.
      return tfds.features.ClassLabel()
    return tfds.features.ClassLabel(names=list(names))

  def _info(self) -> tfds.core.DatasetInfo:
    features = tfds.features.FeaturesDict({
        'video': tfds.features.Video(
            shape=(None, None, None, 3), encoding_format='jpeg'
        ),
        'label': self._label_feature(),
        'label_text': tfds.features.Text(),
        'filename': tfds.features.Text(),
    })
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=features,
        supervised_keys=('video', 'label'),
        homepage=self.HOMEPAGE,
        citation=self.CITATION,
        metadata=tfds.core.MetadataDict(
            format=FORMAT_NAME,
            # How the frames were stored: the preprocessing contract
            # (vidjax/inference/contract.py) records it.
            **{'jpeg_quality': self.JPEG_QUALITY, **self._metadata()}),
    )

  def _download_and_prepare(
      self,
      dl_manager: tfds.download.DownloadManager,
      download_config: tfds.download.DownloadConfig | None = None,
  ) -> None:
    download_config = download_config or tfds.download.DownloadConfig()
    serializer = _SequenceExampleSerializer(
        example_specs={},  # Only TFDS's duplicate-key error message reads it.
        class_names=tuple(self._class_names()),
        jpeg_quality=self.JPEG_QUALITY,
    )
    split_infos = []
    for split, examples in self._split_generators(dl_manager).items():
      num_shards = self._num_shards(split)
      shard_config = (
          shard_utils.ShardConfig(num_shards=num_shards)
          if num_shards
          else download_config.get_shard_config()
      )
      template = self._get_filename_template(split_name=split)
      writer = tfds_writer.Writer(
          serializer=serializer,
          filename_template=template,
          hash_salt=split,
          disable_shuffling=self.info.disable_shuffling,
          example_writer=tfds_writer.ExampleWriter(
              file_format=self.info.file_format
          ),
          shard_config=shard_config,
      )
      for key, fields in examples:
        writer.write(key, fields)
      shard_lengths, num_bytes = writer.finalize()
      split_infos.append(
          tfds.core.SplitInfo(
              name=split,
              shard_lengths=shard_lengths,
              num_bytes=num_bytes,
              filename_template=template,
          )
      )
    self.info.set_splits(tfds.core.SplitDict(split_infos))

  def _as_dataset(
      self,
      split: str,
      decoders: Any = None,
      read_config: tfds.ReadConfig | None = None,
      shuffle_files: bool = False,
  ) -> tf.data.Dataset:
    """Whole splits, decoded: {'video' uint8 [T,H,W,3], 'label', ...}.

    A convenience for browsing (`tfds.load`); training reads the shards through
    `vidjax.data.pipeline`, which decodes only the sampled frames. Sub-split
    syntax ('train[:10%]') and decoders are not supported.
    """
    if decoders is not None:
      raise VidjaxError(f'{self.name}: custom decoders are not supported')
    files = tf.constant(self.split_files(str(split)))
    if shuffle_files:
      seed = read_config.shuffle_seed if read_config else None
      files = tf.random.shuffle(files, seed=seed)
    ds = tf.data.TFRecordDataset(files)

    def decode(serialized):
      ex = formats.parse_sequence_example(serialized)
      return {
          'video': transforms.decode_frames(ex['frames']),
          'label': ex['label'],
          'label_text': ex['label_text'],
          'filename': ex['filename'],
      }

    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)

  # ---------------------------------------------------------------------------
  # What the input pipeline reads.
  # ---------------------------------------------------------------------------

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.info.features['label'].names)

  @property
  def split_names(self) -> tuple[str, ...]:
    """Splits on disk (empty before `download_and_prepare`)."""
    return tuple(sorted(self.info.splits.keys()))

  def _check_split(self, split: str):
    if split not in self.info.splits:
      available = ', '.join(self.split_names) or 'none: not prepared yet'
      raise VidjaxError(
          f'Dataset {self.info.full_name} has no split {split!r}; available '
          f'splits: {available}'
      )

  def split_shards(self, split: str) -> list[tuple[str, int]]:
    """(path, number of records) of each shard of `split`, in shard order."""
    self._check_split(split)
    info = self.info.splits[split]
    return [
        (os.fspath(path), int(n))
        for path, n in zip(info.filepaths, info.shard_lengths, strict=True)
    ]

  def split_files(self, split: str) -> list[str]:
    """Paths of the TFRecord shards of `split`, in shard order."""
    return [path for path, _ in self.split_shards(split)]

  def num_examples(self, split: str) -> int:
    self._check_split(split)
    return int(self.info.splits[split].num_examples)
