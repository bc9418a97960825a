"""One record -> one example (training) or its views (evaluation), never an
error: a record the reader or a step cannot handle gets a status instead.

Each record's steps run in a one-element tf.data dataset under
`ignore_errors`, followed by a fallback element (`protected`), so an op
error (a corrupt JPEG, a malformed proto) becomes an 'undecodable' blank and
every input yields exactly one output, in order.
"""

from __future__ import annotations

import sys

import tensorflow as tf

from vidjax.data import formats
from vidjax.data import pipeline_steps
from vidjax.data import tfrecord_reader

# Why a record was skipped; status code i + 1 is SKIP_REASONS[i], 0 is fine.
# The reader's kinds first (bytes that are not a readable record), then what
# the steps find wrong with a well-formed one.
SKIP_REASONS = tfrecord_reader.KINDS + ('undecodable', 'no_frames',
                                        'bad_label')
_UNDECODABLE, _NO_FRAMES, _BAD_LABEL = (
    SKIP_REASONS.index(k) + 1 for k in ('undecodable', 'no_frames',
                                        'bad_label'))
# The running totals training examples carry in 'counts'.
COUNT_NAMES = SKIP_REASONS + ('padded',)




def output_shape(data_config, train: bool) -> list[int]:
  size, frames = data_config.crop_size, data_config.num_frames
  if train:
    return [frames, size, size, 3]
  return [data_config.num_test_crops, frames, size, size, 3]


def blank(data_config, train: bool, status) -> dict[str, tf.Tensor]:
  return {
      'video': tf.zeros(output_shape(data_config, train), tf.float32),
      'label': tf.constant(0, tf.int32),
      'status': tf.cast(status, tf.int32),
      'padded': tf.constant(False),
      'filename': tf.constant(''),
  }


def process(index, clip_index, serialized, read_status, *, data_config,
             train, num_classes, base_seed):
  """Runs the steps on one record; bad records get a status, not an error.

  `read_status` > 0: the reader could not read the record (its kind); the
  steps do not run.
  """
  return tf.cond(
      read_status > 0,
      lambda: blank(data_config, train, read_status),
      lambda: _process_record(index, clip_index, serialized,
                              data_config=data_config, train=train,
                              num_classes=num_classes, base_seed=base_seed))


def _process_record(index, clip_index, serialized, *, data_config, train,
                    num_classes, base_seed):
  steps = pipeline_steps.resolve(data_config, train)
  ctx = pipeline_steps.StepContext(
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
    video = tf.ensure_shape(video, output_shape(data_config, train))
    return {
        'video': tf.cast(video, tf.float32),
        'label': tf.cast(g['label'], tf.int32),
        'status': tf.constant(0, tf.int32),
        'padded': tf.cast(g.get('padded', False), tf.bool),
        'filename': f['filename'],
    }

  def bad():
    return {**blank(data_config, train, status), 'filename': f['filename']}

  return tf.cond(tf.equal(status, 0), good, bad)


def _report_skips(index, out):
  """Logs a skipped record on stderr (reason, index, file) from the graph.

  Records the reader skipped are logged by it, with shard and offset.
  """
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

  done = tf.cond(out['status'] > len(tfrecord_reader.KINDS), report,
                 lambda: tf.constant(False))
  with tf.control_dependencies([done]):
    return {k: tf.identity(v) for k, v in out.items()}


def protected(fn, data_config, train):
  """fn(index, clip, serialized) as a one-element dataset that never fails.

  An op error (a corrupt JPEG, a malformed proto) inside `fn` drops its
  element (`ignore_errors`); the fallback after it then supplies an
  'undecodable' blank instead. Each input yields exactly one element, so an
  interleave over these keeps the input order.
  """

  def one(index, clip_index, serialized, read_status):
    ok = tf.data.Dataset.from_tensors(
        (index, clip_index, serialized, read_status)).map(fn).ignore_errors()
    # Built lazily, inside maps: a blank clip is tens of MB of zeros, which
    # must not be filled for every good record. `named` recovers the file
    # name for the log when the proto itself parses.
    make_blank = lambda *_: blank(data_config, train, _UNDECODABLE)
    named = tf.data.Dataset.from_tensors(serialized).map(
        lambda rec: {**make_blank(), 'filename': formats.parse_sequence_example(
            rec)['filename']}).ignore_errors()
    fallback = named.concatenate(tf.data.Dataset.range(1).map(make_blank))
    return ok.concatenate(fallback).take(1).map(
        lambda out: {**_report_skips(index, out), 'index': index,
                     'clip': clip_index})

  return one
