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

from vidjax import config as config_lib

# Torchvision/ImageNet statistics: what TSN/TSM-style ResNets expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Maps [0, 1] to [-1, 1]: what TF-slim I3D/S3D checkpoints expect.
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)
# PySlowFast's defaults, which the official TimeSformer trains with.
SLOWFAST_MEAN = (0.45, 0.45, 0.45)
SLOWFAST_STD = (0.225, 0.225, 0.225)
# torchvision's video models (S3D, R(2+1)D, ...): Kinetics-400 statistics.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

# Normalisation presets by model family: `config.data.normalization`.
NORMALIZATION = {
    'imagenet': (IMAGENET_MEAN, IMAGENET_STD),  # TSN/TSM, ImageNet ResNets.
    'inception': (INCEPTION_MEAN, INCEPTION_STD),  # TF-slim I3D/S3D(-G).
    'kinetics': (KINETICS_MEAN, KINETICS_STD),  # torchvision video models.
    'slowfast': (SLOWFAST_MEAN, SLOWFAST_STD),  # PySlowFast, TimeSformer.
    'none': ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),  # [0, 1] pixels.
}

# TSN's multi-scale crop: crop sides as fractions of the shorter frame side.
TSN_SCALES = config_lib.TSN_SCALES


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


def random_fixed_crop_window(
    image_shape: tf.Tensor, seed: tf.Tensor, size: int
) -> tf.Tensor:
  """A `size` x `size` box at a uniform random position (I3D/S3D training).

  Frames smaller than `size` give their whole extent on that side.

  Args:
    image_shape: [H, W, C].
    seed: stateless seed, shape [2].
    size: side of the box.

  Returns:
    int32 [4] = (y, x, height, width).
  """
  shape = tf.cast(image_shape, tf.int32)
  h, w = tf.minimum(shape[0], size), tf.minimum(shape[1], size)
  u = tf.random.stateless_uniform([2], seed=seed)
  y = tf.cast(u[0] * tf.cast(shape[0] - h + 1, tf.float32), tf.int32)
  x = tf.cast(u[1] * tf.cast(shape[1] - w + 1, tf.float32), tf.int32)
  return tf.stack([tf.minimum(y, shape[0] - h), tf.minimum(x, shape[1] - w),
                   h, w])


def multi_scale_crop_window(
    image_shape: tf.Tensor,
    seed: tf.Tensor,
    output_size: int,
    scales: Sequence[float] = TSN_SCALES,
    max_distort: int = 1,
) -> tf.Tensor:
  """TSN's multi-scale crop box (`GroupMultiScaleCrop`, `more_fix_crop`).

  Height and width are each `int(short_side * scale)` for scales from
  `scales` at most `max_distort` positions apart in the list (a side within
  3 px of `output_size` snaps to it). The box sits at one of 13 fixed
  positions on a 4 x 4 grid of the slack: the corners, the centre, the
  middles of the edges and the four quarter points, chosen uniformly.

  Args:
    image_shape: [H, W, C].
    seed: stateless seed, shape [2].
    output_size: the side the crop is resized to afterwards.
    scales: crop side / shorter frame side.
    max_distort: largest index distance between the height and width scales.

  Returns:
    int32 [4] = (y, x, height, width).
  """
  shape = tf.cast(image_shape, tf.int32)
  img_h, img_w = shape[0], shape[1]
  base = tf.cast(tf.minimum(img_h, img_w), tf.float32)
  sides = tf.cast(base * tf.constant(scales, tf.float32), tf.int32)
  sides = tf.where(tf.abs(sides - output_size) < 3, output_size, sides)
  pairs = [(i, j) for i in range(len(scales)) for j in range(len(scales))
           if abs(i - j) <= max_distort]
  seed_pair, seed_pos = tf.unstack(
      tf.random.experimental.stateless_split(seed, 2))
  pick = tf.random.stateless_uniform(
      [], seed=seed_pair, maxval=len(pairs), dtype=tf.int32)
  # TSN pairs (w, h) = (sizes[i], sizes[j]).
  w_idx = tf.gather([p[0] for p in pairs], pick)
  h_idx = tf.gather([p[1] for p in pairs], pick)
  crop_w = tf.minimum(tf.gather(sides, w_idx), img_w)
  crop_h = tf.minimum(tf.gather(sides, h_idx), img_h)
  w_step, h_step = (img_w - crop_w) // 4, (img_h - crop_h) // 4
  # (x, y) in steps: corners, centre, then TSN's `more_fix_crop` additions.
  grid = tf.constant([(0, 0), (4, 0), (0, 4), (4, 4), (2, 2),
                      (0, 2), (4, 2), (2, 4), (2, 0),
                      (1, 1), (3, 1), (1, 3), (3, 3)], tf.int32)
  pos = tf.random.stateless_uniform(
      [], seed=seed_pos, maxval=grid.shape[0], dtype=tf.int32)
  x = grid[pos, 0] * w_step
  y = grid[pos, 1] * h_step
  return tf.stack([y, x, crop_h, crop_w])


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
  """Bilinear resize of every frame to [height, width]; float32 output.

  A clip already of that size is only cast (a fixed-size crop needs no
  resampling, and bilinear resize to the same size is the identity anyway).
  """
  shape = tf.shape(video)
  same = tf.logical_and(tf.equal(shape[-3], height),
                        tf.equal(shape[-2], width))
  return tf.cond(
      same,
      lambda: tf.ensure_shape(tf.cast(video, tf.float32), video.shape[:-3]
                              .concatenate([height, width, video.shape[-1]])),
      lambda: tf.image.resize(video, [height, width], method='bilinear'))


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


def spatial_crops(video: tf.Tensor, size: int, num_crops: int) -> tf.Tensor:
  """Test crops of `size` x `size`: [num_crops, T, size, size, C].

  One crop is the centre. Three are spaced along the longer side (left,
  centre, right of a landscape frame; top, centre, bottom of a portrait one)
  and centred on the shorter side, as in PySlowFast's `uniform_crop` and
  Scenic's three-crop test.

  Args:
    video: [T, H, W, C] with min(H, W) >= size.
    size: crop side.
    num_crops: 1 or 3.

  Returns:
    The crops, stacked on a new leading view axis.
  """
  if num_crops == 1:
    return centre_crop(video, size, size)[None]
  if num_crops != 3:
    raise ValueError(f'num_test_crops must be 1 or 3, got {num_crops}')
  shape = tf.shape(video)
  h, w = shape[1], shape[2]
  landscape = w >= h
  long_slack = tf.where(landscape, w, h) - size
  short_offset = (tf.where(landscape, h, w) - size) // 2
  crops = []
  for along in (0, long_slack // 2, long_slack):
    y = tf.where(landscape, short_offset, along)
    x = tf.where(landscape, along, short_offset)
    crops.append(video[:, y : y + size, x : x + size, :])
  return tf.stack(crops)


def flip_left_right(video: tf.Tensor) -> tf.Tensor:
  """Mirrors every frame; video is [..., H, W, C]."""
  return tf.reverse(video, axis=[-2])


def random_flip_left_right(video: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors the whole clip with probability 1/2.

  Not for datasets with left/right classes unless their labels are swapped
  too (Something-Something, `moving_shapes`): see `random_flip_with_labels`.
  """
  flip = tf.random.stateless_uniform([], seed=seed) < 0.5
  return tf.cond(flip, lambda: flip_left_right(video), lambda: video)


def label_swap_table(mapping, num_classes: int) -> tf.Tensor:
  """int32 [num_classes]: class -> its mirror-image class (else itself).

  Args:
    mapping: {label: label} for classes that change under a horizontal flip,
      e.g. {'pushing left to right': ...} by index. Need not list both
      directions; a one-sided entry is made symmetric.
    num_classes: size of the table.

  Raises:
    ValueError: a label out of range or mapped two ways.
  """
  table = list(range(num_classes))
  pairs = {}
  for a, b in dict(mapping).items():
    a, b = int(a), int(b)
    for label in (a, b):
      if not 0 <= label < num_classes:
        raise ValueError(f'flip_label_map: label {label} outside '
                         f'[0, {num_classes})')
    for x, y in ((a, b), (b, a)):
      if pairs.get(x, y) != y:
        raise ValueError(f'flip_label_map maps {x} to both {pairs[x]} and {y}')
      pairs[x] = y
  for x, y in pairs.items():
    table[x] = y
  return tf.constant(table, tf.int32)


def random_flip_with_labels(
    video: tf.Tensor,
    label: tf.Tensor,
    seed: tf.Tensor,
    swap_table: tf.Tensor | None = None,
) -> tuple[tf.Tensor, tf.Tensor]:
  """Mirrors the clip with probability 1/2, mapping its label if flipped."""
  flip = tf.random.stateless_uniform([], seed=seed) < 0.5
  video = tf.cond(flip, lambda: flip_left_right(video), lambda: video)
  if swap_table is not None:
    mapped = tf.gather(swap_table, tf.cast(label, tf.int32))
    label = tf.where(flip, tf.cast(mapped, label.dtype), label)
  return video, label


def color_jitter(video: tf.Tensor, seed: tf.Tensor, strength: float):
  """Random brightness, contrast and saturation, one draw per clip.

  Factors are drawn from [1 - strength, 1 + strength] (brightness as an
  additive shift of up to `strength` / 4 of the range), as torchvision's
  ColorJitter(b, c, s) does, and applied in that fixed order to all frames.

  Args:
    video: float [..., H, W, 3] in [0, 255].
    seed: stateless seed, shape [2].
    strength: 0 leaves the clip unchanged.

  Returns:
    float32, same shape, clipped to [0, 255].
  """
  if strength <= 0:
    return tf.cast(video, tf.float32)
  seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  x = tf.cast(video, tf.float32) / 255.0
  x = tf.image.stateless_random_brightness(x, strength / 4, seeds[0])
  x = tf.image.stateless_random_contrast(x, 1 - strength, 1 + strength,
                                         seeds[1])
  x = tf.image.stateless_random_saturation(x, max(1 - strength, 0.0),
                                           1 + strength, seeds[2])
  return tf.clip_by_value(x, 0.0, 1.0) * 255.0


def reverse_time(video: tf.Tensor) -> tf.Tensor:
  """Plays the clip backwards; video is [..., T, H, W, C]."""
  return tf.reverse(video, axis=[-4])


def normalize(
    video: tf.Tensor, mean: Sequence[float], std: Sequence[float]
) -> tf.Tensor:
  """Scales [0, 255] pixels to [0, 1], then `(x - mean) / std` per channel."""
  scale = [1 / (255.0 * s) for s in std]
  offset = [-m / s for m, s in zip(mean, std)]
  video = tf.cast(video, tf.float32)
  # Host cost matters here (a 64x224² clip is 9.6M values): a multiply-add
  # by scalars is ~10x cheaper than by [3]-vectors, which Eigen broadcasts
  # slowly over the short last axis.
  if len(set(scale)) == 1 and len(set(offset)) == 1:
    return video * scale[0] + offset[0]
  # Per-channel constants: broadcast them over a long (width * channels)
  # axis instead, ~2x faster than over the channel axis.
  shape = tf.shape(video)
  row = shape[-2] * shape[-1]
  flat = tf.reshape(video, [-1, row])
  reps = [shape[-2]]
  flat = (flat * tf.tile(tf.constant(scale, tf.float32), reps)
          + tf.tile(tf.constant(offset, tf.float32), reps))
  return tf.ensure_shape(tf.reshape(flat, shape), video.shape)
