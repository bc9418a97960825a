"""Overlays: which frames a grid shows, the heat map's scale, the blend."""
import numpy as np

from vidjax.inference.explain import overlay


def test_a_grid_shows_at_most_eight_evenly_spaced_frames_ends_included():
  np.testing.assert_array_equal(overlay.shown_frames(3), [0, 1, 2])
  np.testing.assert_array_equal(overlay.shown_frames(64),
                                [0, 9, 18, 27, 36, 45, 54, 63])


def test_maps_are_scaled_by_the_clips_maximum():
  heat = np.array([[[1.0, 2.0]], [[4.0, 0.0]]])
  np.testing.assert_array_equal(overlay.normalised(heat),
                                [[[0.25, 0.5]], [[1.0, 0.0]]])
  np.testing.assert_array_equal(overlay.normalised(np.zeros((2, 1, 2))), 0)


def test_blend_and_patches():
  frames = np.zeros((1, 2, 2, 3))
  cold, hot = overlay.overlaid(frames, np.array([[[0.0, 1.0], [0, 0]]]))[
      0, 0]
  # jet: 0 is dark blue, 1 dark red; half of each over black.
  np.testing.assert_allclose(cold, [0, 0, 0.5 * 0.5], atol=1e-6)
  np.testing.assert_allclose(hot, [0.5 * 0.5, 0, 0], atol=1e-6)
  np.testing.assert_array_equal(
      overlay.patch_upsampled(np.array([[[1, 2]]]), 2),
      [[[1, 1, 2, 2], [1, 1, 2, 2]]])
  np.testing.assert_allclose(
      overlay.displayed(np.array([[[[-1.0, 0.0, 3.0]]]]), (0.5,) * 3,
                        (0.25,) * 3), [[[[0.25, 0.5, 1.0]]]])
