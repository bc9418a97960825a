"""Which frames of a video make a clip (DMVR's "sample" phase).

Two strategies:

* Dense clips (I3D, S3D-G, SlowFast, TimeSformer): `num_frames` frames taken
  every `stride` frames, spanning `(num_frames - 1) * stride + 1` frames of
  the video. Training starts the clip at a random offset. Testing takes
  `num_clips` evenly spaced clips: clip k starts at
  `floor((2k + 1) * slack / (2 * num_clips))`, the centre of the k-th of
  `num_clips` equal parts of the `slack = length - span` possible starts
  (mmaction2's rule; one clip is the centred clip).
* Segments (TSN, TSM): the video is cut into `num_segments` equal segments
  and each gives one frame. Training takes a random frame of each segment
  (TSN: segments of `length // num_segments` frames), testing the frame at
  the centre of each (TSN's `int(tick / 2 + tick * i)`, `tick = length /
  num_segments`); test clip k of `num_clips` takes the frame at fraction
  `(k + 0.5) / num_clips` of each segment instead of its centre.

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


def sample_train_indices(
    num_available: tf.Tensor, num_frames: int, stride: int, seed: tf.Tensor
) -> tf.Tensor:
  """Indices of a random clip; `seed` is a shape-[2] stateless seed."""
  start = random_start(num_available, num_frames, stride, seed)
  return clip_indices(num_available, start, num_frames, stride)


def eval_start(
    num_available: tf.Tensor,
    num_frames: int,
    stride: int,
    clip_index: tf.Tensor | int = 0,
    num_clips: int = 1,
) -> tf.Tensor:
  """Start of test clip `clip_index` of `num_clips` evenly spaced clips."""
  if num_clips < 1:
    raise ValueError(f'need num_clips >= 1, got {num_clips}')
  slack = tf.maximum(
      tf.cast(num_available, tf.int32) - clip_span(num_frames, stride), 0
  )
  k = tf.cast(clip_index, tf.int32)
  return ((2 * k + 1) * slack) // (2 * num_clips)


def sample_eval_indices(
    num_available: tf.Tensor,
    num_frames: int,
    stride: int,
    clip_index: tf.Tensor | int = 0,
    num_clips: int = 1,
) -> tf.Tensor:
  """Indices of test clip `clip_index` of `num_clips` (1: the centred clip)."""
  start = eval_start(num_available, num_frames, stride, clip_index, num_clips)
  return clip_indices(num_available, start, num_frames, stride)


def is_short(num_available: tf.Tensor, num_frames: int, stride: int):
  """True when the video has fewer frames than a dense clip spans."""
  return tf.cast(num_available, tf.int32) < clip_span(num_frames, stride)


def sample_train_segments(
    num_available: tf.Tensor, num_segments: int, seed: tf.Tensor
) -> tf.Tensor:
  """TSN training indices: a random frame of each of `num_segments` segments.

  Segments are `length // num_segments` frames long, as in TSN (the last
  `length % num_segments` frames are never drawn). A video shorter than
  `num_segments` frames gives `floor(i * length / num_segments)`, its frames
  in order with repeats (TSN would give frame 0 for every segment).

  Args:
    num_available: frames in the video (> 0).
    num_segments: frames in the clip.
    seed: stateless seed, shape [2].

  Returns:
    int32 [num_segments].
  """
  if num_segments < 1:
    raise ValueError(f'need num_segments >= 1, got {num_segments}')
  n = tf.cast(num_available, tf.int32)
  i = tf.range(num_segments, dtype=tf.int32)
  length = n // num_segments
  jitter = tf.random.stateless_uniform(
      [num_segments], seed=seed, minval=0, maxval=tf.maximum(length, 1),
      dtype=tf.int32,
  )
  long_enough = i * length + jitter
  spread = (i * n) // num_segments
  return tf.minimum(tf.where(length > 0, long_enough, spread), n - 1)


def sample_eval_segments(
    num_available: tf.Tensor,
    num_segments: int,
    clip_index: tf.Tensor | int = 0,
    num_clips: int = 1,
) -> tf.Tensor:
  """TSN test indices: the centre of each segment (see the module doc)."""
  if num_segments < 1 or num_clips < 1:
    raise ValueError(
        f'need num_segments, num_clips >= 1, got {num_segments}, {num_clips}'
    )
  n = tf.cast(num_available, tf.float64)
  tick = n / num_segments
  i = tf.range(num_segments, dtype=tf.float64)
  within = (tf.cast(clip_index, tf.float64) + 0.5) / num_clips
  # float64 and a floor: TSN's int() of a float, without float32 rounding
  # moving an index across a frame boundary.
  indices = tf.cast(tf.floor(tick * within + tick * i), tf.int32)
  return tf.minimum(indices, tf.cast(num_available, tf.int32) - 1)
