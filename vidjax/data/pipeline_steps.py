"""The pipeline's named steps (DMVR's phases) and their registry.

A config lists steps by name (`config.data.train_steps`, `eval_steps`):
parse -> sample -> crop window -> decode -> resize, flip, ... -> normalise.
Each maps a dict of features to a dict of features; `register_step` adds one
or replaces a built-in everywhere it is listed. docs/pipeline.md has the
catalogue.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
import zlib

import ml_collections
import tensorflow as tf

from vidjax.data import formats
from vidjax.data import sampling
from vidjax.data import transforms
from vidjax.errors import VidjaxError



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
  if c.flip_label_map:
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
  mean, std = data_config.mean, data_config.std
  if mean is not None and std is not None:
    return tuple(mean), tuple(std)
  name = data_config.normalization
  if name not in transforms.NORMALIZATION:
    raise VidjaxError(
        f'unknown normalization {name!r}; known: '
        f'{", ".join(sorted(transforms.NORMALIZATION))}')
  return transforms.NORMALIZATION[name]


@register_step('normalize')
def _normalize(f, ctx):
  mean, std = normalization(ctx.config)
  return {**f, 'video': transforms.normalize(f['video'], mean, std)}


def resolve(data_config, train: bool) -> list[tuple[str, Step]]:
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
