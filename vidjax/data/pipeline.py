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
  * a record that cannot be parsed or whose sampled JPEGs cannot be decoded
    ('undecodable'), a record with no frames ('no_frames'), a label outside
    [0, num_classes) or missing ('bad_label') is skipped, logged (stderr:
    reason, record index, file name when known) and counted;
  * a video shorter than the clip is padded by repeating its last frame
    (`sampling`) and counted ('padded'), not skipped;
  * a truncated shard is read up to its last complete record (`sources`).
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

from collections.abc import Callable, Mapping
import dataclasses
import math
import sys
import zlib

import ml_collections
from ml_collections import config_dict
import tensorflow as tf

from vidjax.data import formats
from vidjax.data import sampling
from vidjax.data import sources
from vidjax.data import transforms
from vidjax.errors import VidjaxError

# Shards read concurrently while training. Fixed, not AUTOTUNE: the cycle
# length changes the record order, which must not depend on the machine.
_INTERLEAVE_CYCLE = 8
# Records before a resume point processed to prime `_running_counts`.
_RESUME_WARMUP = 8

# Why a record was skipped; status code i + 1 is SKIP_REASONS[i], 0 is fine.
SKIP_REASONS = ('undecodable', 'no_frames', 'bad_label')
_UNDECODABLE, _NO_FRAMES, _BAD_LABEL = 1, 2, 3
# The running totals training examples carry in 'counts'.
COUNT_NAMES = SKIP_REASONS + ('padded',)

# Flip before resize: mirroring uint8 pixels moves a quarter of the bytes.
DEFAULT_TRAIN_STEPS = ('parse', 'sample_dense', 'crop_random_resized',
                       'decode', 'flip', 'resize', 'color_jitter', 'normalize')
DEFAULT_EVAL_STEPS = ('parse', 'sample_dense', 'decode', 'reverse_time',
                      'resize_short_side', 'spatial_crops', 'normalize')


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
  """What a trainer needs to know about a dataset."""

  name: str  # As given, e.g. 'moving_shapes/default'.
  num_classes: int
  class_names: tuple[str, ...]
  num_examples: Mapping[str, int]  # Split name -> number of clips.
  data_dir: str  # The prepared version directory (or the TFRecords' dir).


def default_data_config() -> ml_collections.ConfigDict:
  """Data settings of the demo: the embedded `moving_shapes/default` videos.

  Normalisation defaults to ImageNet's mean/std (`normalization='imagenet'`),
  what most converted 2D backbones (TSN/TSM, ViT/TimeSformer-style) expect;
  TF-slim I3D/S3D checkpoints want 'inception' ([-1, 1]). A model trained
  from scratch (the demo) works with either.

  Returns:
    The ConfigDict with every field `build_dataset` reads.
  """
  c = ml_collections.ConfigDict()
  c.name = 'moving_shapes/default'
  c.train_split = 'train'
  c.eval_split = 'test'  # Held out; 'validation' is there for tuning.
  c.data_dir = config_dict.placeholder(str)  # None: TFDS's default dir.
  # name='tfrecord': existing DMVR/Scenic TFRecords instead of a builder.
  # Glob patterns (comma-separated for several) of train_split / eval_split.
  c.train_pattern = config_dict.placeholder(str)
  c.eval_pattern = config_dict.placeholder(str)
  c.num_classes = config_dict.placeholder(int)
  c.class_names_file = config_dict.placeholder(str)  # One name per line.

  c.train_steps = DEFAULT_TRAIN_STEPS
  c.eval_steps = DEFAULT_EVAL_STEPS
  # Training streams the global batch is drawn from, each reading its own
  # files; None: one per process. Fix it to keep the data order when the
  # number of hosts changes (vidjax/train/trainer.py: train_stream).
  c.input_shards = config_dict.placeholder(int)
  c.num_frames = 8  # Frames per clip (segments, for 'sample_segments').
  c.frame_stride = 2  # 8 frames span 15 of the 17 stored.
  c.crop_size = 48  # From 64 px frames.
  # crop_random_resized: not Inception's (0.08, 1), tiny crops could cut the
  # moving shape out.
  c.train_area_range = (0.5, 1.0)
  c.train_aspect_range = (3 / 4, 4 / 3)
  # crop_multi_scale (TSN).
  c.multi_scale_scales = transforms.TSN_SCALES
  c.multi_scale_max_distort = 1
  # Off: a mirrored left-to-right clip is a right-to-left one. With a
  # {label: mirrored label} map the flip swaps those labels.
  c.horizontal_flip = False
  c.flip_label_map = config_dict.placeholder(dict)
  c.color_jitter = 0.0  # Strength; 0 is off.
  c.normalization = 'imagenet'  # A transforms.NORMALIZATION preset.
  c.mean = config_dict.placeholder(tuple)  # Both set: override the preset.
  c.std = config_dict.placeholder(tuple)

  # Evaluation: clips x crops views per video, scores averaged per video.
  c.num_test_clips = 1
  c.num_test_crops = 1  # 1 (centre) or 3 (along the long side).
  c.eval_resize_ratio = 1.15  # Short side 55, then crops of 48.
  c.reverse_time = False  # Evaluate on time-reversed clips.
  # Counted in raw serialized clips (~25 KB each here; Kinetics clips are
  # megabytes, size it accordingly).
  c.shuffle_buffer = 1024
  return c


def dataset_info(data_config) -> DatasetMeta:
  """Prepares the dataset if needed and describes it.

  Args:
    data_config: see `default_data_config`; only the source fields are read.

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


# -----------------------------------------------------------------------------
# Steps.
# -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StepContext:
  """What a step may read besides the features."""

  config: ml_collections.ConfigDict  # The data config.
  train: bool
  num_classes: int
  key: tf.Tensor  # This example's stateless seed, shape [2].
  clip_index: tf.Tensor  # Evaluation: which of num_test_clips; 0 in training.

  def seed(self, step_name: str) -> tf.Tensor:
    """A stateless seed of the step's own: listing or removing other steps
    leaves this step's draws unchanged."""
    return tf.random.experimental.stateless_fold_in(
        self.key, zlib.crc32(step_name.encode()) & 0x7FFFFFFF)


Step = Callable[[dict, StepContext], dict]
STEPS: dict[str, Step] = {}


def register_step(name: str) -> Callable[[Step], Step]:
  """Decorator: makes `fn(features, ctx) -> features` listable as `name`.

  Registering an existing name replaces that step everywhere it is listed.
  """

  def register(fn: Step) -> Step:
    STEPS[name] = fn
    return fn

  return register


@register_step('parse')
def _parse(f, ctx):
  del ctx
  return {**f, **formats.parse_sequence_example(f['serialized'])}


@register_step('sample_dense')
def _sample_dense(f, ctx):
  c, n = ctx.config, tf.shape(f['frames'])[0]
  if ctx.train:
    indices = sampling.sample_train_indices(
        n, c.num_frames, c.frame_stride, ctx.seed('sample_dense'))
  else:
    indices = sampling.sample_eval_indices(
        n, c.num_frames, c.frame_stride, ctx.clip_index, c.num_test_clips)
  return {**f, 'frames': tf.gather(f['frames'], indices),
          'padded': sampling.is_short(n, c.num_frames, c.frame_stride)}


@register_step('sample_segments')
def _sample_segments(f, ctx):
  c, n = ctx.config, tf.shape(f['frames'])[0]
  if ctx.train:
    indices = sampling.sample_train_segments(
        n, c.num_frames, ctx.seed('sample_segments'))
  else:
    indices = sampling.sample_eval_segments(
        n, c.num_frames, ctx.clip_index, c.num_test_clips)
  return {**f, 'frames': tf.gather(f['frames'], indices),
          'padded': n < c.num_frames}


def _jpeg_shape(f):
  return tf.image.extract_jpeg_shape(f['frames'][0])


@register_step('crop_random_resized')
def _crop_random_resized(f, ctx):
  """Inception-style box; decoded as a window, resized by 'resize'."""
  c = ctx.config
  window = transforms.random_crop_window(
      _jpeg_shape(f), ctx.seed('crop_random_resized'), c.train_area_range,
      c.train_aspect_range)
  return {**f, 'crop_window': window}


@register_step('crop_random')
def _crop_random(f, ctx):
  """A crop_size box at a random position (I3D/S3D-G: from 256 px frames)."""
  window = transforms.random_fixed_crop_window(
      _jpeg_shape(f), ctx.seed('crop_random'), ctx.config.crop_size)
  return {**f, 'crop_window': window}


@register_step('crop_multi_scale')
def _crop_multi_scale(f, ctx):
  """TSN's multi-scale corner/centre crop."""
  c = ctx.config
  window = transforms.multi_scale_crop_window(
      _jpeg_shape(f), ctx.seed('crop_multi_scale'), c.crop_size,
      tuple(c.multi_scale_scales), c.multi_scale_max_distort)
  return {**f, 'crop_window': window}


@register_step('decode')
def _decode(f, ctx):
  """Decodes the sampled JPEGs, only inside 'crop_window' when there is one.

  `decode_and_crop_jpeg` skips the IDCT of blocks outside the window, most
  of the decoding cost for training crops.
  """
  del ctx
  f = dict(f)
  video = transforms.decode_frames(f.pop('frames'), f.pop('crop_window', None))
  return {**f, 'video': video}


@register_step('resize')
def _resize(f, ctx):
  size = ctx.config.crop_size
  return {**f, 'video': transforms.resize(f['video'], size, size)}


@register_step('flip')
def _flip(f, ctx):
  c = ctx.config
  if not c.horizontal_flip:
    return f
  table = None
  if c.get('flip_label_map'):
    table = transforms.label_swap_table(c.flip_label_map, ctx.num_classes)
  video, label = transforms.random_flip_with_labels(
      f['video'], f['label'], ctx.seed('flip'), table)
  return {**f, 'video': video, 'label': label}


@register_step('color_jitter')
def _color_jitter(f, ctx):
  strength = ctx.config.color_jitter
  if not strength:
    return f
  return {**f, 'video': transforms.color_jitter(
      f['video'], ctx.seed('color_jitter'), strength)}


@register_step('reverse_time')
def _reverse_time(f, ctx):
  if not ctx.config.reverse_time:
    return f
  return {**f, 'video': transforms.reverse_time(f['video'])}


@register_step('resize_short_side')
def _resize_short_side(f, ctx):
  c = ctx.config
  short = round(c.crop_size * c.eval_resize_ratio)
  return {**f, 'video': transforms.resize_short_side(f['video'], short)}


@register_step('spatial_crops')
def _spatial_crops(f, ctx):
  """[T, H, W, C] -> [num_test_crops, T, crop, crop, C]."""
  c = ctx.config
  return {**f, 'video': transforms.spatial_crops(
      f['video'], c.crop_size, c.num_test_crops)}


def normalization(data_config) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """(mean, std): explicit `mean` and `std`, else the named preset."""
  mean, std = data_config.get('mean'), data_config.get('std')
  if mean is not None and std is not None:
    return tuple(mean), tuple(std)
  name = data_config.get('normalization', 'imagenet')
  if name not in transforms.NORMALIZATION:
    raise VidjaxError(
        f'unknown normalization {name!r}; known: '
        f'{", ".join(sorted(transforms.NORMALIZATION))}')
  return transforms.NORMALIZATION[name]


@register_step('normalize')
def _normalize(f, ctx):
  mean, std = normalization(ctx.config)
  return {**f, 'video': transforms.normalize(f['video'], mean, std)}


# -----------------------------------------------------------------------------
# One record -> one example (training) or its views (evaluation).
# -----------------------------------------------------------------------------


def _steps(data_config, train: bool) -> list[tuple[str, Step]]:
  names = tuple(data_config.train_steps if train else data_config.eval_steps)
  unknown = [n for n in names if n not in STEPS]
  if unknown:
    raise VidjaxError(
        f'unknown pipeline step(s) {", ".join(map(repr, unknown))} in '
        f'config.data.{"train" if train else "eval"}_steps; known steps: '
        f'{", ".join(sorted(STEPS))}')
  if not names:
    raise VidjaxError(f'config.data.{"train" if train else "eval"}_steps is '
                      'empty; the first step must parse the record')
  return [(n, STEPS[n]) for n in names]


def _output_shape(data_config, train: bool) -> list[int]:
  size, frames = data_config.crop_size, data_config.num_frames
  if train:
    return [frames, size, size, 3]
  return [data_config.num_test_crops, frames, size, size, 3]


def _blank(data_config, train: bool, status) -> dict[str, tf.Tensor]:
  return {
      'video': tf.zeros(_output_shape(data_config, train), tf.float32),
      'label': tf.constant(0, tf.int32),
      'status': tf.cast(status, tf.int32),
      'padded': tf.constant(False),
      'filename': tf.constant(''),
  }


def _process(index, clip_index, serialized, *, data_config, train,
             num_classes, base_seed):
  """Runs the steps on one record; bad records get a status, not an error."""
  steps = _steps(data_config, train)
  ctx = StepContext(
      config=data_config, train=train, num_classes=num_classes,
      key=tf.random.experimental.stateless_fold_in(base_seed, index),
      clip_index=clip_index)
  f = steps[0][1]({'serialized': serialized}, ctx)
  label = tf.cast(f['label'], tf.int64)
  status = tf.where(
      tf.shape(f['frames'])[0] == 0, _NO_FRAMES,
      tf.where((label < 0) | (label >= num_classes), _BAD_LABEL, 0))

  def good():
    g = dict(f)
    for _, step in steps[1:]:
      g = step(g, ctx)
    video = g['video']
    if not train and video.shape.rank == 4:  # No 'spatial_crops' listed.
      video = video[None]
    video = tf.ensure_shape(video, _output_shape(data_config, train))
    return {
        'video': tf.cast(video, tf.float32),
        'label': tf.cast(g['label'], tf.int32),
        'status': tf.constant(0, tf.int32),
        'padded': tf.cast(g.get('padded', False), tf.bool),
        'filename': f['filename'],
    }

  def bad():
    return {**_blank(data_config, train, status), 'filename': f['filename']}

  return tf.cond(tf.equal(status, 0), good, bad)


def _report_skips(index, out):
  """Logs a skipped record on stderr (reason, index, file) from the graph."""
  reason = tf.gather(tf.constant(('ok',) + SKIP_REASONS),
                     tf.clip_by_value(out['status'], 0, len(SKIP_REASONS)))

  def report():
    name = tf.where(out['filename'] == '', 'file name unknown',
                    out['filename'])
    tf.print(tf.strings.join(['vidjax: skipped record ',
                              tf.strings.as_string(index), ' (', name, '): ',
                              reason]),
             output_stream=sys.stderr)
    return tf.constant(True)

  done = tf.cond(out['status'] > 0, report, lambda: tf.constant(False))
  with tf.control_dependencies([done]):
    return {k: tf.identity(v) for k, v in out.items()}


def _protected(fn, data_config, train):
  """fn(index, clip, serialized) as a one-element dataset that never fails.

  An op error (a corrupt JPEG, a malformed proto) inside `fn` drops its
  element (`ignore_errors`); the fallback after it then supplies an
  'undecodable' blank instead. Each input yields exactly one element, so an
  interleave over these keeps the input order.
  """

  def one(index, clip_index, serialized):
    ok = tf.data.Dataset.from_tensors((index, clip_index, serialized)).map(
        fn).ignore_errors()
    # Built lazily, inside maps: a blank clip is tens of MB of zeros, which
    # must not be filled for every good record. `named` recovers the file
    # name for the log when the proto itself parses.
    blank = lambda *_: _blank(data_config, train, _UNDECODABLE)
    named = tf.data.Dataset.from_tensors(serialized).map(
        lambda rec: {**blank(), 'filename': formats.parse_sequence_example(
            rec)['filename']}).ignore_errors()
    fallback = named.concatenate(tf.data.Dataset.range(1).map(blank))
    return ok.concatenate(fallback).take(1).map(
        lambda out: {**_report_skips(index, out), 'index': index,
                     'clip': clip_index})

  return one


# -----------------------------------------------------------------------------
# Streams of raw records.
# -----------------------------------------------------------------------------


def _process_share(shards, process_index, process_count):
  """This process's shards, its records per epoch, and record-level sharding.

  Whole shards when there are enough (each host reads only its files);
  otherwise every process reads all files and keeps every P-th record.
  """
  if len(shards) >= process_count:
    mine = shards[process_index::process_count]
    return list(mine), sum(s.num_records for s in mine), False
  total = sum(s.num_records for s in shards)
  count = len(range(process_index, total, process_count))
  return list(shards), count, True


def _read(shards) -> tf.data.Dataset:
  """The complete records of `shards`, in order (truncated tails cut off)."""
  paths = tf.constant([s.path for s in shards])
  counts = tf.constant([s.num_records for s in shards], tf.int64)
  return tf.data.Dataset.from_tensor_slices((paths, counts)).flat_map(
      lambda p, n: tf.data.TFRecordDataset(p).take(n))


def _train_records(
    shards, *, seed, process_index, process_count, shuffle_buffer, start
):
  """(global index, serialized record) from record `start` on, forever."""
  mine, epoch_size, by_record = _process_share(
      shards, process_index, process_count
  )
  if epoch_size == 0:
    raise VidjaxError(
        f'Process {process_index} of {process_count} gets no training '
        f'records: the split has fewer clips than processes.'
    )
  paths = tf.constant([s.path for s in mine])
  counts = tf.constant([s.num_records for s in mine], tf.int64)

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
      ds = _read(mine).shard(process_count, process_index)
    else:
      ds = tf.data.Dataset.from_tensor_slices((paths, counts))
      ds = ds.shuffle(len(mine), seed=file_seed)
      ds = ds.interleave(
          lambda p, n: tf.data.TFRecordDataset(p).take(n),
          cycle_length=min(len(mine), _INTERLEAVE_CYCLE),
          block_length=1,
          num_parallel_calls=tf.data.AUTOTUNE,
          deterministic=True,
      )
    ds = ds.shuffle(shuffle_buffer, seed=record_seed)
    return ds.enumerate().map(lambda pos, rec: (epoch * epoch_size + pos, rec))

  first_epoch, skip = divmod(start, epoch_size)
  ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch_records)
  return ds.skip(skip)


def _eval_records(shards, process_index, process_count):
  """(index in the split, serialized) of this process's records, in order."""
  offsets = [0]
  for s in shards:
    offsets.append(offsets[-1] + s.num_records)
  if len(shards) >= process_count:
    mine = list(range(process_index, len(shards), process_count))
    paths = tf.constant([shards[i].path for i in mine])
    counts = tf.constant([shards[i].num_records for i in mine], tf.int64)
    starts = tf.constant([offsets[i] for i in mine], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((paths, counts, starts))
    return ds.flat_map(
        lambda p, n, o: tf.data.TFRecordDataset(p).take(n).enumerate().map(
            lambda j, rec: (o + j, rec)))
  ds = _read(shards).enumerate()
  return ds.shard(process_count, process_index) if process_count > 1 else ds


def _eval_share_sizes(shards, process_count) -> list[int]:
  if len(shards) >= process_count:
    return [sum(s.num_records for s in shards[p::process_count])
            for p in range(process_count)]
  total = sum(s.num_records for s in shards)
  return [len(range(p, total, process_count)) for p in range(process_count)]


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
  if data_config.num_test_crops not in (1, 3):
    raise VidjaxError(
        f'num_test_crops must be 1 or 3, got {data_config.num_test_crops}')
  if data_config.num_test_clips < 1:
    raise VidjaxError(
        f'num_test_clips must be >= 1, got {data_config.num_test_clips}')
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
    data_config: see `default_data_config`.
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
  _steps(data_config, train)
  source = sources.open_source(data_config)
  shards = list(source.shards(split))
  num_classes = len(source.class_names)
  base_seed = tf.constant([seed, process_index], tf.int64)
  process = lambda i, k, rec: _process(
      i, k, rec, data_config=data_config, train=train,
      num_classes=num_classes, base_seed=base_seed)
  # Each record's work runs in its own tiny dataset (see `_protected`);
  # interleave runs several at once, in order.
  parallel = dict(cycle_length=tf.data.AUTOTUNE, block_length=1,
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  if train:
    # A resumed stream also processes a few records before its start, to
    # know the good example a skipped record there would repeat.
    warmup = min(start_step * batch_size, _RESUME_WARMUP)
    records = _train_records(
        shards,
        seed=seed,
        process_index=process_index,
        process_count=process_count,
        shuffle_buffer=data_config.shuffle_buffer,
        start=start_step * batch_size - warmup,
    )
    ds = records.map(lambda i, rec: (i, tf.constant(0, tf.int64), rec))
    ds = ds.interleave(_protected(process, data_config, train), **parallel)
    ds = _running_counts(ds, warmup)
  else:
    clips, crops = data_config.num_test_clips, data_config.num_test_crops
    records = _eval_records(shards, process_index, process_count)
    ds = records.flat_map(
        lambda i, rec: tf.data.Dataset.range(clips).map(
            lambda k: (i, k, rec)))
    ds = ds.interleave(_protected(process, data_config, train), **parallel)

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
    sizes = _eval_share_sizes(shards, process_count)
    views_per_video = clips * crops
    num_batches = max(1, math.ceil(max(sizes) * views_per_video / batch_size))
    padding = {
        'video': tf.zeros(_output_shape(data_config, True), tf.float32),
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
