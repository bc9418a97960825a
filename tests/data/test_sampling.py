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
