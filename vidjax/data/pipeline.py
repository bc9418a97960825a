"""The tf.data input pipeline: `build_dataset` and `dataset_info`.

Phases, as in DMVR: parse (the DMVR SequenceExample) -> sample (frame
indices) -> decode (only the sampled JPEGs; training decodes only the crop
window) -> preprocess (crop, resize, optional flip, normalise) -> batch.

Determinism and resuming (training):
  * The raw serialized records are shuffled and repeated with seeds derived
    from (seed, epoch): epoch e's order is a pure function of them.
  * Every record carries its global index in this process's stream; the
    augmentation of a record (clip offset, crop, flip) uses stateless random
    ops seeded from (seed, process_index, index), so it does not depend on
    iteration history or on tf.data's parallelism.
  * `start_step=k` therefore starts the stream at epoch `k*B // E` and skips
    `k*B % E` raw records (E: records per epoch in this process) before any
    parsing or decoding: the batches are exactly those at steps k, k+1, ... of
    an uninterrupted run, at the cost of reading under one epoch of bytes.

Multi-host: each process reads every `process_count`-th shard (or, when there
are fewer shards than processes, every `process_count`-th record), with its
own `batch_size` (the per-process batch).

Evaluation: one pass in file order, the last batch padded with zero videos
whose `mask` is 0, and every process yields the same number of batches
(`num_eval_batches`), so multi-host evaluation stays in lock step and counts
are exact.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import math

import ml_collections
from ml_collections import config_dict
import tensorflow as tf
import tensorflow_datasets as tfds

from vidjax.data import builders
from vidjax.data import formats
from vidjax.data import sampling
from vidjax.data import transforms
from vidjax.errors import VidjaxError

# Shards read concurrently while training. Fixed, not AUTOTUNE: the cycle
# length changes the record order, which must not depend on the machine.
_INTERLEAVE_CYCLE = 8


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What a trainer needs to know about a prepared dataset."""

  name: str  # As given, e.g. 'moving_shapes/default'.
  num_classes: int
  class_names: tuple[str, ...]
  num_examples: Mapping[str, int]  # Split name -> number of clips.
  data_dir: str  # The prepared version directory.


def default_data_config() -> ml_collections.ConfigDict:
  """Data settings of the demo: the embedded `moving_shapes/default` videos.

  Normalisation defaults to ImageNet's mean/std (`transforms.IMAGENET_*`),
  what most converted 2D backbones (TSN/TSM, ViT/TimeSformer-style) expect;
  TF-slim I3D/S3D checkpoints want `transforms.INCEPTION_*` ([-1, 1]). A model
  trained from scratch (the demo) works with either.

  Returns:
    The ConfigDict with every field `build_dataset` reads.
  """
  c = ml_collections.ConfigDict()
  c.name = 'moving_shapes/default'
  c.train_split = 'train'
  c.eval_split = 'test'  # Held out; 'validation' is there for tuning.
  c.data_dir = config_dict.placeholder(str)  # None: TFDS's default dir.
  c.num_frames = 8
  c.frame_stride = 2  # 8 frames span 15 of the 17 stored.
  c.crop_size = 48  # From 64 px frames.
  # Not Inception's (0.08, 1): tiny crops could cut the moving shape out.
  c.train_area_range = (0.5, 1.0)
  c.train_aspect_range = (3 / 4, 4 / 3)
  c.eval_resize_ratio = 1.15  # Short side 55, then the central 48.
  # Off: a mirrored left-to-right clip is a right-to-left one.
  c.horizontal_flip = False
  c.mean = transforms.IMAGENET_MEAN
  c.std = transforms.IMAGENET_STD
  # Counted in raw serialized clips (~25 KB each here; Kinetics clips are
  # megabytes, size it accordingly).
  c.shuffle_buffer = 1024
  return c


def _prepared_builder(data_config) -> builders.DmvrBuilder:
  builder = builders.get_builder(data_config.name, data_config.get('data_dir'))
  # Renders synthetic data on first use; a no-op once prepared. With several
  # processes on one shared data_dir, prepare once before starting them.
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False)
  )
  return builder


def dataset_info(data_config) -> DatasetMeta:
  """Prepares the dataset if needed and describes it.

  Args:
    data_config: see `default_data_config`; only `name` and `data_dir` are read.

  Returns:
    Class names and split sizes.

  Raises:
    VidjaxError: unknown dataset.
  """
  builder = _prepared_builder(data_config)
  return DatasetMeta(
      name=data_config.name,
      num_classes=len(builder.class_names),
      class_names=builder.class_names,
      num_examples={s: builder.num_examples(s) for s in builder.split_names},
      data_dir=builder.data_dir,
  )


def num_eval_batches(
    num_examples: int, batch_size: int, process_count: int = 1
) -> int:
  """Batches every process yields in evaluation (padding included)."""
  per_process = math.ceil(num_examples / process_count)
  return max(1, math.ceil(per_process / batch_size))


# -----------------------------------------------------------------------------
# Per-example phases.
# -----------------------------------------------------------------------------


def _finish(video, label, data_config) -> dict[str, tf.Tensor]:
  size = data_config.crop_size
  video = transforms.normalize(video, data_config.mean, data_config.std)
  video = tf.ensure_shape(video, [data_config.num_frames, size, size, 3])
  return {
      'video': video,
      'label': tf.cast(label, tf.int32),
      'mask': tf.constant(1.0, tf.float32),
  }


def _train_example(index, serialized, *, base_seed, data_config):
  """parse -> sample -> decode (crop window only) -> preprocess."""
  ex = formats.parse_sequence_example(serialized)
  key = tf.random.experimental.stateless_fold_in(base_seed, index)
  offset_seed, crop_seed, flip_seed = tf.unstack(
      tf.random.experimental.stateless_split(key, 3)
  )
  indices = sampling.sample_train_indices(
      tf.shape(ex['frames'])[0],
      data_config.num_frames,
      data_config.frame_stride,
      offset_seed,
  )
  jpegs = tf.gather(ex['frames'], indices)
  window = transforms.random_crop_window(
      tf.image.extract_jpeg_shape(jpegs[0]),
      crop_seed,
      data_config.train_area_range,
      data_config.train_aspect_range,
  )
  video = transforms.decode_frames(jpegs, window)
  size = data_config.crop_size
  video = transforms.resize(video, size, size)
  if data_config.horizontal_flip:
    video = transforms.random_flip_left_right(video, flip_seed)
  return _finish(video, ex['label'], data_config)


def _eval_example(serialized, *, data_config):
  """parse -> centred clip -> decode -> resize short side -> centre crop."""
  ex = formats.parse_sequence_example(serialized)
  indices = sampling.sample_eval_indices(
      tf.shape(ex['frames'])[0],
      data_config.num_frames,
      data_config.frame_stride,
  )
  video = transforms.decode_frames(tf.gather(ex['frames'], indices))
  size = data_config.crop_size
  video = transforms.resize_short_side(
      video, round(size * data_config.eval_resize_ratio)
  )
  video = transforms.centre_crop(video, size, size)
  return _finish(video, ex['label'], data_config)


# -----------------------------------------------------------------------------
# Streams of raw records.
# -----------------------------------------------------------------------------


def _process_share(shards, process_index, process_count):
  """This process's files, its records per epoch, and record-level sharding.

  Whole shards when there are enough (each host reads only its files);
  otherwise every process reads all files and keeps every P-th record.
  """
  if len(shards) >= process_count:
    mine = shards[process_index::process_count]
    return [f for f, _ in mine], sum(n for _, n in mine), False
  total = sum(n for _, n in shards)
  count = len(range(process_index, total, process_count))
  return [f for f, _ in shards], count, True


def _train_records(
    shards, *, seed, process_index, process_count, shuffle_buffer, start
):
  """(global index, serialized record) from record `start` on, forever."""
  files, epoch_size, by_record = _process_share(
      shards, process_index, process_count
  )
  if epoch_size == 0:
    raise VidjaxError(
        f'Process {process_index} of {process_count} gets no training '
        f'records: the split has fewer clips than processes.'
    )

  def epoch_records(epoch):
    # Each epoch's shuffles use seeds derived from (seed, epoch) alone, so
    # resuming can jump straight to any epoch.
    file_seed, record_seed = tf.unstack(
        tf.random.stateless_uniform(
            [2],
            seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
            minval=None,
            maxval=None,
            dtype=tf.int64,
        )
    )
    if by_record:
      ds = tf.data.TFRecordDataset(files).shard(process_count, process_index)
    else:
      ds = tf.data.Dataset.from_tensor_slices(files)
      ds = ds.shuffle(len(files), seed=file_seed)
      ds = ds.interleave(
          tf.data.TFRecordDataset,
          cycle_length=min(len(files), _INTERLEAVE_CYCLE),
          block_length=1,
          num_parallel_calls=tf.data.AUTOTUNE,
          deterministic=True,
      )
    ds = ds.shuffle(shuffle_buffer, seed=record_seed)
    return ds.enumerate().map(lambda pos, rec: (epoch * epoch_size + pos, rec))

  first_epoch, skip = divmod(start, epoch_size)
  ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch_records)
  return ds.skip(skip)


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  # Parallelism comes from tf.data's parallel maps; letting each op also
  # spawn threads oversubscribes the few host cores.
  options.threading.max_intra_op_parallelism = 1
  return options


def _check_args(data_config, batch_size, start_step, process_index,
                process_count):
  if batch_size < 1:
    raise VidjaxError(f'batch_size must be >= 1, got {batch_size}')
  if start_step < 0:
    raise VidjaxError(f'start_step must be >= 0, got {start_step}')
  if not 0 <= process_index < process_count:
    raise VidjaxError(
        f'process_index {process_index} not in [0, {process_count})'
    )
  if data_config.eval_resize_ratio < 1:
    raise VidjaxError(
        f'eval_resize_ratio must be >= 1 to centre-crop, got '
        f'{data_config.eval_resize_ratio}'
    )


def build_dataset(
    data_config,
    split: str,
    *,
    train: bool,
    batch_size: int,
    seed: int = 0,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> tf.data.Dataset:
  """The batched input stream of one process.

  Args:
    data_config: see `default_data_config`.
    split: split name, e.g. 'train', 'validation', 'test'.
    train: training stream (random clips and crops, infinite, batches of
      exactly `batch_size`) or evaluation stream (centred clips, one pass,
      last batch padded).
    batch_size: examples per batch in this process.
    seed: training randomness (record order and augmentation).
    start_step: training only: begin at this step's batch, as if `start_step`
      batches had been consumed already.
    process_index: this process, in [0, process_count).
    process_count: number of processes reading the split.

  Returns:
    A dataset of dicts: 'video' float32 [B, T, H, W, 3], 'label' int32 [B],
    'mask' float32 [B] (1 for real examples, 0 for evaluation padding).

  Raises:
    VidjaxError: unknown dataset or split, or bad arguments.
  """
  _check_args(data_config, batch_size, start_step, process_index,
              process_count)
  builder = _prepared_builder(data_config)
  shards = builder.split_shards(split)
  if train:
    records = _train_records(
        shards,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle_buffer=data_config.shuffle_buffer,
        start=start_step * batch_size,
    )
    base_seed = tf.constant([seed, process_index], tf.int64)
    ds = records.map(
        lambda i, rec: _train_example(
            i, rec, base_seed=base_seed, data_config=data_config
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
  else:
    ds = tf.data.TFRecordDataset([f for f, _ in shards])
    if process_count > 1:
      ds = ds.shard(process_count, process_index)
    ds = ds.map(
        lambda rec: _eval_example(rec, data_config=data_config),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    total = builder.num_examples(split)
    mine = len(range(process_index, total, process_count))
    num_batches = num_eval_batches(total, batch_size, process_count)
    size = data_config.crop_size
    padding = {
        'video': tf.zeros([data_config.num_frames, size, size, 3], tf.float32),
        'label': tf.constant(0, tf.int32),
        'mask': tf.constant(0.0, tf.float32),
    }
    pad = tf.data.Dataset.from_tensors(padding)
    ds = ds.concatenate(pad.repeat(num_batches * batch_size - mine))
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
