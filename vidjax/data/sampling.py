"""Which frames of a video make a clip (DMVR's "sample" phase).

A clip is `num_frames` frames taken every `stride` frames, so it spans
`(num_frames - 1) * stride + 1` frames of the video. Training starts it at a
random offset, evaluation at the centre.

Videos shorter than the span are padded by clamping: indices past the end
repeat the last frame. Clamping (rather than DMVR's looping back to frame 0)
never shows frames out of order, which matters for datasets whose classes are
defined by temporal order (e.g. `moving_shapes`, Something-Something).
"""

from __future__ import annotations

import tensorflow as tf


def clip_span(num_frames: int, stride: int) -> int:
  """Number of video frames a clip covers, first to last inclusive."""
  if num_frames < 1 or stride < 1:
    raise ValueError(
        f'need num_frames, stride >= 1, got {num_frames}, {stride}'
    )
  return (num_frames - 1) * stride + 1


def clip_indices(
    num_available: tf.Tensor, start: tf.Tensor, num_frames: int, stride: int
) -> tf.Tensor:
  """int32 [num_frames]: `start + stride * i`, clamped to the last frame."""
  offsets = tf.range(num_frames, dtype=tf.int32) * stride
  indices = tf.cast(start, tf.int32) + offsets
  return tf.minimum(indices, tf.cast(num_available, tf.int32) - 1)


def random_start(
    num_available: tf.Tensor, num_frames: int, stride: int, seed: tf.Tensor
) -> tf.Tensor:
  """Uniform start in [0, max(num_available - span, 0)]; stateless seed."""
  last_start = tf.maximum(
      tf.cast(num_available, tf.int32) - clip_span(num_frames, stride), 0
  )
  return tf.random.stateless_uniform(
      [], seed=seed, minval=0, maxval=last_start + 1, dtype=tf.int32
  )


def centre_start(
    num_available: tf.Tensor, num_frames: int, stride: int
) -> tf.Tensor:
  """Start that centres the clip (earlier frame when the slack is odd)."""
  slack = tf.cast(num_available, tf.int32) - clip_span(num_frames, stride)
  return tf.maximum(slack, 0) // 2


def sample_train_indices(
    num_available: tf.Tensor, num_frames: int, stride: int, seed: tf.Tensor
) -> tf.Tensor:
  """Indices of a random clip; `seed` is a shape-[2] stateless seed."""
  start = random_start(num_available, num_frames, stride, seed)
  return clip_indices(num_available, start, num_frames, stride)


def sample_eval_indices(
    num_available: tf.Tensor, num_frames: int, stride: int
) -> tf.Tensor:
  """Indices of the centred clip."""
  start = centre_start(num_available, num_frames, stride)
  return clip_indices(num_available, start, num_frames, stride)
