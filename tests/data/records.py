"""Tiny DMVR TFRecords written by the tests themselves.

Frame t of video v is flat grey level `frame_level(v, t)` with a darker left
quarter, so a decoded pixel tells which frame it came from (flat JPEG blocks
survive compression to within a level or two) and a mirror image is easy to
recognise.
"""
import io
import os

import numpy as np
from PIL import Image
import tensorflow as tf

from vidjax import config as config_lib
from vidjax.data import formats

HEIGHT, WIDTH = 24, 32


def frame_level(video: int, t: int) -> int:
  return 30 + 7 * t + video % 3  # < 255 for t < 32.


def frame(video: int, t: int, height=HEIGHT, width=WIDTH) -> np.ndarray:
  img = np.full((height, width, 3), frame_level(video, t), np.uint8)
  img[:, : width // 4] = 10  # Dark left quarter: shows a mirror image.
  return img


def jpeg(img: np.ndarray) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(img).save(buf, format='JPEG', quality=95)
  return buf.getvalue()


def record(video: int, num_frames: int, label: int, *, corrupt=(),
           height=HEIGHT, width=WIDTH) -> bytes:
  """A serialized SequenceExample; frames listed in `corrupt` are garbage."""
  frames = [b'\xff\xd8 not a jpeg' if t in corrupt
            else jpeg(frame(video, t, height, width))
            for t in range(num_frames)]
  return formats.make_sequence_example(
      encoded_frames=frames, label=label, label_text=f'class{label}',
      filename=f'video{video}.mp4').SerializeToString()


def write_shards(directory, name, records, num_shards):
  """Writes `records` round-robin into DMVR-named shards; returns paths."""
  os.makedirs(directory, exist_ok=True)
  paths = [os.path.join(directory, f'{name}-{i:05d}-of-{num_shards:05d}')
           for i in range(num_shards)]
  writers = [tf.io.TFRecordWriter(p) for p in paths]
  for i, rec in enumerate(records):
    writers[i % num_shards].write(rec)
  for w in writers:
    w.close()
  return paths


def truncate(path, drop_bytes):
  with open(path, 'rb') as f:
    data = f.read()
  with open(path, 'wb') as f:
    f.write(data[:-drop_bytes])


def data_config(train_pattern=None, eval_pattern=None, num_classes=4,
                **overrides):
  c = config_lib.default_config().data
  c.name = 'tfrecord'
  c.train_pattern = train_pattern
  c.eval_pattern = eval_pattern
  c.train_split, c.eval_split = 'train', 'validation'
  c.num_classes = num_classes
  c.num_frames = 4
  c.frame_stride = 2
  c.crop_size = 16
  c.eval_resize_ratio = 1.0
  c.shuffle_buffer = 8
  c.normalization = 'none'
  c.update(overrides)
  return c
