"""The tf.data pipeline: `build_dataset` and `dataset_info`.

Named steps, as in DMVR: parse -> sample -> decode -> preprocess. A config
lists them by name (`config.data.train_steps`, `config.data.eval_steps`), so
it can remove one, reorder them, or swap in another registered step
(`register_step`); see docs/pipeline.md for the catalogue. Each step maps a
dict of features to a dict of features: 'serialized' -> parse -> 'frames'
(JPEG strings), 'label', 'filename' -> sample -> the clip's JPEGs -> crop
windows -> decode -> 'video' -> resize, flip, ... -> normalise.

Records come from a vidjax TFDS builder or from existing DMVR TFRecords
(`config.data.name = 'tfrecord'`); see `sources`.

Determinism and resuming (training):
  * The raw serialized records are shuffled and repeated with seeds derived
    from (seed, epoch): epoch e's order is a pure function of them.
  * Every record carries its global index in this process's stream; the
    augmentation of a record uses stateless random ops seeded from (seed,
    process_index, index, step name), so it does not depend on iteration
    history, on tf.data's parallelism, or on which other steps are listed.
  * Every raw record yields exactly one example (a bad one is replaced, see
    below), so `start_step=k` starts the stream at epoch `k*B // E` and skips
    `k*B % E` raw records (E: records per epoch in this process) before any
    parsing or decoding: the batches are exactly those at steps k, k+1, ... of
    an uninterrupted run, at the cost of reading under one epoch of bytes
    (and decoding the `_RESUME_WARMUP` records before record k*B, so that a
    skipped record there is replaced as it was; only a run of more skipped
    records than that can differ).

Bad input never stops a run, and nothing is dropped silently:
  * bytes that are not a readable record, whatever they hold (a bad length or
    data checksum, a garbage length, a truncated shard, data that is not a
    SequenceExample or lacks the frames or the label), are found by
    `tfrecord_reader`, which logs each with its shard and byte offset and
    reads on from the next sound record;
  * a record whose sampled JPEGs cannot be decoded ('undecodable'), one with
    no frames ('no_frames'), a label outside [0, num_classes) ('bad_label')
    is skipped, logged (stderr: reason, record index, file name) and counted;
  * a video shorter than the clip is padded by repeating its last frame
    (`sampling`) and counted ('padded'), not skipped.
  Every shard yields exactly its record count (metadata's, else the frames
  found), skipped records included, so read + skipped = written.
  Training replaces a skipped record by the previous good example of the
  stream (so batches stay full and resuming stays exact; a skipped record
  before any good one becomes a zero clip with mask 0), and every example
  carries 'counts', the running totals of `COUNT_NAMES` since the stream
  started. Evaluation turns a skipped record into masked views that carry
  their 'status', so the evaluator counts them.

Multi-host: each process reads every `process_count`-th shard (or, when there
are fewer shards than processes, every `process_count`-th record), with its
own `batch_size` (the per-process batch).

Evaluation: one pass in file order over `num_test_clips` temporal clips x
`num_test_crops` spatial crops per video, each view a separate element with
its 'video_index' (position in the split) and 'view_index', the last batch
padded with zero views whose `mask` is 0. Every process yields the same number
of batches (`num_eval_batches`), so multi-host evaluation stays in lock step
and counts are exact; `vidjax.train.evaluate` averages the views per video.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import math
from typing import Any

import tensorflow as tf

from vidjax import config as config_lib
from vidjax.data import pipeline_steps
from vidjax.data import processing
from vidjax.data import sources
from vidjax.data import streams
from vidjax.errors import VidjaxError

# Records before a resume point processed to prime `_running_counts`.
_RESUME_WARMUP = 8

# The pipeline's parts, under the names callers know from here: the steps
# (`pipeline_steps`), skip accounting (`processing`). The data config's fields and
# defaults: vidjax/config.py.
SKIP_REASONS = processing.SKIP_REASONS
COUNT_NAMES = processing.COUNT_NAMES
STEPS = pipeline_steps.STEPS
StepContext = pipeline_steps.StepContext
register_step = pipeline_steps.register_step
normalization = pipeline_steps.normalization


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What a trainer needs to know about a dataset."""

  name: str  # As given, e.g. 'moving_shapes/default'.
  num_classes: int
  class_names: tuple[str, ...]
  num_examples: Mapping[str, int]  # Split name -> number of clips.
  data_dir: str  # The prepared version directory (or the TFRecords' dir).
  # What preparation recorded (fps, short_side, jpeg_quality or image_size);
  # {} for TFRecords nobody described.
  metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def dataset_info(data_config) -> DatasetMeta:
  """Prepares the dataset if needed and describes it.

  Args:
    data_config: `config.data` (vidjax/config.py); only the source fields
      are read.

  Returns:
    Class names and split sizes.

  Raises:
    VidjaxError: unknown dataset, or existing TFRecords badly specified.
  """
  source = sources.open_source(data_config)
  return DatasetMeta(
      name=data_config.name,
      num_classes=len(source.class_names),
      class_names=source.class_names,
      num_examples={s: source.num_examples(s) for s in source.split_names},
      data_dir=source.data_dir,
      metadata=dict(getattr(source, 'metadata', None) or {}),
  )


def num_eval_batches(
    num_examples: int, batch_size: int, process_count: int = 1,
    views: int = 1,
) -> int:
  """Batches every process yields in evaluation (padding included).

  Assumes the split divides evenly by records; `build_dataset` uses the
  largest real share of its processes.
  """
  per_process = math.ceil(num_examples / process_count)
  return max(1, math.ceil(per_process * views / batch_size))


def num_views(data_config) -> int:
  return data_config.num_test_clips * data_config.num_test_crops


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
  # The schema's ranges of the data fields (checked at load too): callers
  # may hand a data config straight to the pipeline.
  config_lib.check_ranges(data_config, 'data')
  normalization(data_config)  # Fails early on an unknown preset.


def _running_counts(ds, warmup: int):
  """Adds 'counts': running totals of COUNT_NAMES, and replaces skipped
  examples by the previous good one (see the module docstring).

  The first `warmup` examples only prime the previous good example (the
  caller drops them), so a resumed stream repeats the same example an
  uninterrupted one did.
  """
  n = len(COUNT_NAMES)

  def step(state, ex):
    counts, last, have_last, pos = state
    status = ex['status']
    counts += tf.cast(pos >= warmup, tf.int64) * tf.concat([
        tf.one_hot(status - 1, len(SKIP_REASONS), dtype=tf.int64),
        [tf.cast(ex['padded'] & (status == 0), tf.int64)]], 0)
    good = status == 0
    fresh = {'video': ex['video'], 'label': ex['label']}
    # tf.cond hands tensors through; tf.where would copy every clip.
    new_last = tf.cond(good, lambda: fresh, lambda: last)
    out = {**new_last, 'mask': tf.where(good | have_last, 1.0, 0.0)}
    return ((counts, new_last, have_last | good, pos + 1),
            {**out, 'counts': counts})

  spec = ds.element_spec
  init = (tf.zeros([n], tf.int64),
          {'video': tf.zeros(spec['video'].shape, tf.float32),
           'label': tf.constant(0, tf.int32)},
          tf.constant(False), tf.constant(0, tf.int64))
  return ds.scan(init, step).skip(warmup)


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
    data_config: `config.data` (vidjax/config.py).
    split: split name, e.g. 'train', 'validation', 'test'.
    train: training stream (random clips and crops, infinite, batches of
      exactly `batch_size`) or evaluation stream (every view of every video
      once, last batch padded).
    batch_size: examples (training) or views (evaluation) per batch in this
      process.
    seed: training randomness (record order and augmentation).
    start_step: training only: begin at this step's batch, as if `start_step`
      batches had been consumed already.
    process_index: this process, in [0, process_count).
    process_count: number of processes reading the split.

  Returns:
    A dataset of dicts: 'video' float32 [B, T, H, W, 3], 'label' int32 [B],
    'mask' float32 [B] (1 for real examples, 0 for padding and skipped
    records), and
      training: 'counts' int64 [B, len(COUNT_NAMES)], running totals;
      evaluation: 'video_index' int64 [B] (position in the split, -1 for
      padding), 'view_index' int32 [B] (clip * num_test_crops + crop),
      'status' int32 [B] (0, or 1 + index into SKIP_REASONS), 'padded' bool
      [B] (short video), 'filename' string [B].

  Raises:
    VidjaxError: unknown dataset, split or step, or bad arguments.
  """
  _check_args(data_config, batch_size, start_step, process_index,
              process_count)
  pipeline_steps.resolve(data_config, train)
  source = sources.open_source(data_config)
  shards = list(source.shards(split))
  num_classes = len(source.class_names)
  base_seed = tf.constant([seed, process_index], tf.int64)
  process = lambda i, k, rec, status: processing.process(
      i, k, rec, status, data_config=data_config, train=train,
      num_classes=num_classes, base_seed=base_seed)
  # Each record's work runs in its own tiny dataset (see `processing.protected`);
  # interleave runs several at once, in order.
  parallel = dict(cycle_length=tf.data.AUTOTUNE, block_length=1,
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if train:
    # A resumed stream also processes a few records before its start, to
    # know the good example a skipped record there would repeat.
    warmup = min(start_step * batch_size, _RESUME_WARMUP)
    records = streams.train_records(
        shards,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle_buffer=data_config.shuffle_buffer,
        start=start_step * batch_size - warmup,
    )
    ds = records.map(
        lambda i, rec, status: (i, tf.constant(0, tf.int64), rec, status))
    ds = ds.interleave(processing.protected(process, data_config, train), **parallel)
    ds = _running_counts(ds, warmup)
  else:
    clips, crops = data_config.num_test_clips, data_config.num_test_crops
    records = streams.eval_records(shards, process_index, process_count)
    ds = records.flat_map(
        lambda i, rec, status: tf.data.Dataset.range(clips).map(
            lambda k: (i, k, rec, status)))
    ds = ds.interleave(processing.protected(process, data_config, train), **parallel)

    def views(out):
      return tf.data.Dataset.from_tensor_slices({
          'video': out['video'],
          'label': tf.fill([crops], out['label']),
          'mask': tf.fill([crops], tf.where(out['status'] == 0, 1.0, 0.0)),
          'video_index': tf.fill([crops], out['index']),
          'view_index': tf.cast(out['clip'] * crops + tf.range(crops,
                                                                dtype=tf.int64),
                                tf.int32),
          'status': tf.fill([crops], out['status']),
          'padded': tf.fill([crops], out['padded']),
          'filename': tf.fill([crops], out['filename']),
      })

    ds = ds.flat_map(views)
    sizes = streams.eval_share_sizes(shards, process_count)
    views_per_video = clips * crops
    num_batches = max(1, math.ceil(max(sizes) * views_per_video / batch_size))
    padding = {
        'video': tf.zeros(processing.output_shape(data_config, True), tf.float32),
        'label': tf.constant(0, tf.int32),
        'mask': tf.constant(0.0, tf.float32),
        'video_index': tf.constant(-1, tf.int64),
        'view_index': tf.constant(0, tf.int32),
        'status': tf.constant(0, tf.int32),
        'padded': tf.constant(False),
        'filename': tf.constant(''),
    }
    pad = tf.data.Dataset.from_tensors(padding)
    mine = sizes[process_index] * views_per_video
    ds = ds.concatenate(pad.repeat(num_batches * batch_size - mine))
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())
