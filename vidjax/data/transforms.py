"""Decoding and spatial transforms of clips (DMVR's "decode" and "preprocess").

Every function acts on a whole clip, [T, H, W, C], so that all frames of a clip
get the same crop and flip: changing the box from frame to frame would add
fake motion. Random choices take a stateless seed (shape [2]) so that the
augmentation of an example depends only on that seed, never on how many
examples the pipeline has processed before (see `pipeline`).
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

# Torchvision/ImageNet statistics: what TSN/TSM-style ResNets expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Maps [0, 1] to [-1, 1]: what TF-slim I3D/S3D checkpoints expect.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)


def random_crop_window(
    image_shape: tf.Tensor,
    seed: tf.Tensor,
    area_range: Sequence[float],
    aspect_range: Sequence[float],
) -> tf.Tensor:
  """Inception-style random box: int32 [4] = (y, x, height, width).

  The box covers a fraction of the image area drawn from `area_range` with a
  width/height ratio drawn from `aspect_range`; after 10 failed attempts it is
  the whole image (TF's `sample_distorted_bounding_box` rules).

  Args:
    image_shape: [H, W, C] (e.g. from `tf.image.extract_jpeg_shape`).
    seed: stateless seed, shape [2].
    area_range: (min, max) fraction of the image area.
    aspect_range: (min, max) width / height.

  Returns:
    The crop window, as `tf.image.decode_and_crop_jpeg` takes it.
  """
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      image_size=tf.cast(image_shape, tf.int32),
      bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
      seed=seed,
      min_object_covered=0.0,
      aspect_ratio_range=tuple(aspect_range),
      area_range=tuple(area_range),
      max_attempts=10,
      use_image_if_no_bounding_boxes=True,
  )
  return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_frames(
    jpegs: tf.Tensor, crop_window: tf.Tensor | None = None
) -> tf.Tensor:
  """Decodes JPEG frames to uint8 [T, H, W, 3], optionally cropped.

  With a crop window, `decode_and_crop_jpeg` skips decoding most pixels
  outside it, which is most of the cost for small training crops.

  Args:
    jpegs: tf.string [T], one JPEG per frame (all frames the same size).
    crop_window: optional int32 [4] (y, x, height, width), same for all frames.

  Returns:
    The decoded clip.
  """
  # INTEGER_ACCURATE is libjpeg's default IDCT, as used by Pillow and
  # torchvision; TF's default (fast) IDCT is off by a few levels.
  if crop_window is None:
    decode = lambda jpeg: tf.io.decode_jpeg(
        jpeg, channels=3, dct_method='INTEGER_ACCURATE'
    )
  else:
    decode = lambda jpeg: tf.io.decode_and_crop_jpeg(
        jpeg, crop_window, channels=3, dct_method='INTEGER_ACCURATE'
    )
  num_frames = jpegs.shape[0]
  if num_frames is not None:
    # Unrolled: lets tf.data run the frames' decodes in parallel.
    return tf.stack([decode(jpegs[i]) for i in range(num_frames)])
  return tf.map_fn(
      decode,
      jpegs,
      fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
  )


def resize(video: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """Bilinear resize of every frame to [height, width]; float32 output."""
  return tf.image.resize(video, [height, width], method='bilinear')


def resize_short_side(video: tf.Tensor, size: int) -> tf.Tensor:
  """Resizes so the shorter side is `size`, keeping the aspect ratio.

  Frames whose shorter side is already `size` pass through unchanged.

  Args:
    video: [T, H, W, C], any real dtype.
    size: target shorter side.

  Returns:
    float32 [T, H', W', C].
  """
  shape = tf.shape(video)
  h, w = shape[1], shape[2]
  short = tf.minimum(h, w)

  def do_resize():
    scale = size / tf.cast(short, tf.float32)
    new_h = tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32)
    new_w = tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32)
    # Pin the short side exactly despite rounding.
    new_h = tf.where(h == short, size, new_h)
    new_w = tf.where(w == short, size, new_w)
    return tf.image.resize(video, tf.stack([new_h, new_w]), method='bilinear')

  return tf.cond(
      tf.equal(short, size), lambda: tf.cast(video, tf.float32), do_resize
  )


def centre_crop(video: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """Crops the central [height, width] of every frame (must fit)."""
  shape = tf.shape(video)
  y = (shape[1] - height) // 2
  x = (shape[2] - width) // 2
  return video[:, y : y + height, x : x + width, :]


def random_flip_left_right(video: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors the whole clip with probability 1/2.

  Not for datasets with left/right classes unless their labels are swapped
  too (Something-Something, `moving_shapes`).
  """
  flip = tf.random.stateless_uniform([], seed=seed) < 0.5
  return tf.cond(flip, lambda: tf.reverse(video, axis=[2]), lambda: video)


def normalize(
    video: tf.Tensor, mean: Sequence[float], std: Sequence[float]
) -> tf.Tensor:
  """Scales [0, 255] pixels to [0, 1], then `(x - mean) / std` per channel."""
  video = tf.cast(video, tf.float32) / 255.0
  mean = tf.constant(mean, tf.float32)
  std = tf.constant(std, tf.float32)
  return (video - mean) / std
