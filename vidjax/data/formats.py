"""The DMVR SequenceExample layout: one video clip per record.

This is the de-facto TFRecord format of Kinetics & co. in the JAX world
(google-deepmind/dmvr `examples/generate_from_file.py`, Scenic). Using the same
keys means TFRecords people already have can be read by our pipeline:

  context
    clip/label/index      int64   class id
    clip/label/text       bytes   class name
    video/filename        bytes   source video (or a synthetic name)
    clip/start/timestamp  int64   optional, microseconds
    clip/end/timestamp    int64   optional, microseconds
  feature_lists
    image/encoded         one feature per frame, bytes_list of one JPEG

The writer side is plain Python (used by the TFDS builders), the reader side a
tf function usable inside `tf.data.Dataset.map`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image
import tensorflow as tf

from vidjax.data.keys import (END_TIMESTAMP_KEY, FILENAME_KEY, IMAGE_KEY,
                              LABEL_INDEX_KEY, LABEL_TEXT_KEY,
                              START_TIMESTAMP_KEY)

# What the reader returns for keys a record lacks. -1 marks "unlabelled"
# (e.g. the Something-Something-v2 test split) and "no timestamp".
MISSING_LABEL = -1
MISSING_TIMESTAMP = -1


def encode_jpeg(frame: np.ndarray, quality: int = 90) -> bytes:
  """Encodes a uint8 [H, W, 3] frame as JPEG (Pillow: faster than eager TF)."""
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


def make_sequence_example(
    *,
    encoded_frames: Sequence[bytes],
    label: int,
    label_text: str,
    filename: str,
    start_timestamp_us: int | None = None,
    end_timestamp_us: int | None = None,
) -> tf.train.SequenceExample:
  """Builds a DMVR SequenceExample from already-encoded JPEG frames.

  Args:
    encoded_frames: one JPEG per frame, in time order.
    label: class id (or `MISSING_LABEL` for unlabelled clips).
    label_text: class name; stored next to the id so records stay
      self-describing even when separated from the label map.
    filename: source video name.
    start_timestamp_us: optional clip start within the source, microseconds.
    end_timestamp_us: optional clip end within the source, microseconds.

  Returns:
    The `tf.train.SequenceExample` proto.
  """
  seq = tf.train.SequenceExample()
  ctx = seq.context.feature
  ctx[LABEL_INDEX_KEY].int64_list.value.append(int(label))
  ctx[LABEL_TEXT_KEY].bytes_list.value.append(label_text.encode('utf-8'))
  ctx[FILENAME_KEY].bytes_list.value.append(filename.encode('utf-8'))
  if start_timestamp_us is not None:
    ctx[START_TIMESTAMP_KEY].int64_list.value.append(int(start_timestamp_us))
  if end_timestamp_us is not None:
    ctx[END_TIMESTAMP_KEY].int64_list.value.append(int(end_timestamp_us))
  # One feature per frame (not one feature with many values): that is what
  # DMVR writes and what `FixedLenSequenceFeature` reads.
  frames = seq.feature_lists.feature_list[IMAGE_KEY].feature
  for jpeg in encoded_frames:
    frames.add().bytes_list.value.append(jpeg)
  return seq


def _first_or_default(sparse: tf.sparse.SparseTensor, default):
  # Labels are parsed as VarLen because some DMVR datasets are multi-label;
  # vidjax is single-label, so it keeps the first one.
  values = sparse.values
  return tf.cond(
      tf.size(values) > 0,
      lambda: values[0],
      lambda: tf.constant(default, values.dtype),
  )


def parse_sequence_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
  """Parses one serialized DMVR SequenceExample (a scalar string tensor).

  Missing optional keys get defaults: label `MISSING_LABEL`, empty label text
  and filename, timestamps `MISSING_TIMESTAMP`.

  Args:
    serialized: scalar tf.string, one serialized `tf.train.SequenceExample`.

  Returns:
    A dict with 'frames' (tf.string [num_frames], still JPEG-encoded so that
    only the sampled frames are decoded later), 'label' (int64 scalar),
    'label_text', 'filename' (string scalars), 'start_timestamp_us' and
    'end_timestamp_us' (int64 scalars).
  """
  context_features = {
      LABEL_INDEX_KEY: tf.io.VarLenFeature(tf.int64),
      LABEL_TEXT_KEY: tf.io.VarLenFeature(tf.string),
      FILENAME_KEY: tf.io.FixedLenFeature([], tf.string, default_value=''),
      START_TIMESTAMP_KEY: tf.io.FixedLenFeature(
          [], tf.int64, default_value=MISSING_TIMESTAMP
      ),
      END_TIMESTAMP_KEY: tf.io.FixedLenFeature(
          [], tf.int64, default_value=MISSING_TIMESTAMP
      ),
  }
  sequence_features = {IMAGE_KEY: tf.io.FixedLenSequenceFeature([], tf.string)}
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features=context_features,
      sequence_features=sequence_features,
  )
  return {
      'frames': sequence[IMAGE_KEY],
      'label': _first_or_default(context[LABEL_INDEX_KEY], MISSING_LABEL),
      'label_text': _first_or_default(context[LABEL_TEXT_KEY], ''),
      'filename': context[FILENAME_KEY],
      'start_timestamp_us': context[START_TIMESTAMP_KEY],
      'end_timestamp_us': context[END_TIMESTAMP_KEY],
  }
