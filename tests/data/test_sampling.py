"""Clip sampling: which frame indices a clip takes."""

import numpy as np
import pytest
import tensorflow as tf

from vidjax.data import sampling


def _seed(i):
  return tf.constant([i, 12345], tf.int64)


@pytest.mark.parametrize(
    'num_available,num_frames,stride,expected',
    [
        # span 7, slack 3 -> start 1.
        (10, 4, 2, [1, 3, 5, 7]),
        # span 15 of 16 stored frames (the demo) -> start 0.
        (16, 8, 2, [0, 2, 4, 6, 8, 10, 12, 14]),
        # slack 2 -> start 1.
        (17, 8, 2, [1, 3, 5, 7, 9, 11, 13, 15]),
        # span 3, slack 7 -> start 3.
        (10, 3, 1, [3, 4, 5]),
        # Shorter than the span: clamp to the last frame.
        (5, 4, 2, [0, 2, 4, 4]),
        (3, 4, 1, [0, 1, 2, 2]),
        (1, 3, 3, [0, 0, 0]),
    ],
)
def test_eval_indices(num_available, num_frames, stride, expected):
  got = sampling.sample_eval_indices(num_available, num_frames, stride)
  assert got.dtype == tf.int32
  assert got.numpy().tolist() == expected


def test_train_indices_cover_every_valid_start():
  # 10 frames, clip span 7: starts 0..3, each a stride-2 run.
  starts = []
  for i in range(200):
    idx = sampling.sample_train_indices(10, 4, 2, _seed(i)).numpy()
    start = idx[0]
    np.testing.assert_array_equal(idx, start + np.array([0, 2, 4, 6]))
    starts.append(start)
  assert set(starts) == {0, 1, 2, 3}
  # Roughly uniform: each start about 50 of 200 times.
  counts = np.bincount(starts, minlength=4)
  assert counts.min() > 25


def test_train_indices_are_a_function_of_the_seed():
  draw = lambda i: sampling.sample_train_indices(40, 4, 3, _seed(i)).numpy()
  a = [draw(i) for i in range(5)]
  b = [draw(i) for i in range(5)]
  np.testing.assert_array_equal(a, b)
  assert len({tuple(x) for x in a}) > 1


def test_train_indices_of_short_video_are_clamped():
  for i in range(20):
    idx = sampling.sample_train_indices(5, 4, 2, _seed(i)).numpy()
    assert idx.tolist() == [0, 2, 4, 4]


def test_exact_fit_has_one_start():
  # 7 frames, span 7: only start 0 is valid.
  for i in range(20):
    idx = sampling.sample_train_indices(7, 4, 2, _seed(i)).numpy()
    assert idx.tolist() == [0, 2, 4, 6]


def test_clip_span():
  assert sampling.clip_span(8, 2) == 15
  assert sampling.clip_span(1, 5) == 1
  with pytest.raises(ValueError):
    sampling.clip_span(0, 1)


def test_works_in_graph_mode_with_dynamic_length():
  @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
  def f(n):
    return sampling.sample_eval_indices(n, 4, 2)

  assert f(tf.constant(10)).numpy().tolist() == [1, 3, 5, 7]
  assert f(tf.constant(5)).numpy().tolist() == [0, 2, 4, 4]


# -----------------------------------------------------------------------------
# Multi-clip testing and TSN segments (hand-computed indices).
# -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    'num_available,num_frames,stride,num_clips,expected',
    [
        # span 7, slack 23: starts floor((2k+1) * 23 / 6) = 3, 11, 19.
        (30, 4, 2, 3, [[3, 5, 7, 9], [11, 13, 15, 17], [19, 21, 23, 25]]),
        # slack 23, two clips: floor(23/4) = 5, floor(69/4) = 17.
        (30, 4, 2, 2, [[5, 7, 9, 11], [17, 19, 21, 23]]),
        # One clip is the centred clip: slack 3 -> start 1.
        (10, 4, 2, 1, [[1, 3, 5, 7]]),
        # No slack: every clip is the same, clamped.
        (5, 4, 2, 3, [[0, 2, 4, 4]] * 3),
        # slack 9, stride 1, four clips: floor(9/8, 27/8, 45/8, 63/8).
        (12, 3, 1, 4, [[1, 2, 3], [3, 4, 5], [5, 6, 7], [7, 8, 9]]),
    ],
)
def test_multi_clip_eval_indices(num_available, num_frames, stride, num_clips,
                                 expected):
  got = [sampling.sample_eval_indices(num_available, num_frames, stride, k,
                                      num_clips).numpy().tolist()
         for k in range(num_clips)]
  assert got == expected


@pytest.mark.parametrize(
    'num_available,num_segments,num_clips,expected',
    [
        # tick 2.5: int(1.25 + 2.5 i) (TSN's test rule).
        (10, 4, 1, [[1, 3, 6, 8]]),
        # tick 0.75: int(0.375 + 0.75 i); fewer frames than segments.
        (3, 4, 1, [[0, 1, 1, 2]]),
        # Two clips at 1/4 and 3/4 of each segment: 0.625 + 2.5 i and
        # 1.875 + 2.5 i.
        (10, 4, 2, [[0, 3, 5, 8], [1, 4, 6, 9]]),
        # tick 8: centres 4, 12, 20.
        (24, 3, 1, [[4, 12, 20]]),
        (1, 3, 1, [[0, 0, 0]]),
    ],
)
def test_eval_segments(num_available, num_segments, num_clips, expected):
  got = [sampling.sample_eval_segments(num_available, num_segments, k,
                                       num_clips).numpy().tolist()
         for k in range(num_clips)]
  assert got == expected


def test_train_segments_draw_within_each_segment():
  # 10 frames, 4 segments of 10 // 4 = 2 frames: {0,1} {2,3} {4,5} {6,7}.
  draws = np.array([
      sampling.sample_train_segments(10, 4, _seed(i)).numpy()
      for i in range(100)])
  for s in range(4):
    assert set(draws[:, s]) == {2 * s, 2 * s + 1}
  assert len({tuple(d) for d in draws}) > 8  # Segments draw independently.
  np.testing.assert_array_equal(
      sampling.sample_train_segments(10, 4, _seed(3)),
      sampling.sample_train_segments(10, 4, _seed(3)))


def test_train_segments_of_short_video_keep_order():
  # 3 frames, 4 segments: floor(i * 3 / 4) = 0, 0, 1, 2 whatever the seed.
  for i in range(10):
    assert sampling.sample_train_segments(
        3, 4, _seed(i)).numpy().tolist() == [0, 0, 1, 2]
