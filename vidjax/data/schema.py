"""The data config: every field `pipeline.build_dataset` reads, with defaults.

Kept apart from the pipeline so that loading a config (configs/*.py) does not
import TensorFlow: `python -m vidjax.main --config=...` answers a bad flag
before TF's start-up, and tools that only read configs stay light.
"""

import ml_collections
from ml_collections import config_dict

# TSN's multi-scale crop: crop sides as fractions of the short side.
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)

# Flip before resize: mirroring uint8 pixels moves a quarter of the bytes.
DEFAULT_TRAIN_STEPS = ('parse', 'sample_dense', 'crop_random_resized',
                       'decode', 'flip', 'resize', 'color_jitter', 'normalize')
DEFAULT_EVAL_STEPS = ('parse', 'sample_dense', 'decode', 'reverse_time',
                      'resize_short_side', 'spatial_crops', 'normalize')


def default_data_config() -> ml_collections.ConfigDict:
  """Data settings of the demo: the embedded `moving_shapes/default` videos.

  Normalisation defaults to ImageNet's mean/std (`normalization='imagenet'`),
  what most converted 2D backbones (TSN/TSM, ViT/TimeSformer-style) expect;
  TF-slim I3D/S3D checkpoints want 'inception' ([-1, 1]). A model trained
  from scratch (the demo) works with either.

  Returns:
    The ConfigDict with every field `build_dataset` reads.
  """
  c = ml_collections.ConfigDict()
  c.name = 'moving_shapes/default'
  c.train_split = 'train'
  c.eval_split = 'test'  # Held out; 'validation' is there for tuning.
  # What evaluation during training reads (config.eval_every_steps).
  c.val_split = 'validation'
  c.data_dir = config_dict.placeholder(str)  # None: TFDS's default dir.
  # name='tfrecord': existing DMVR/Scenic TFRecords instead of a builder.
  # Glob patterns (comma-separated for several) of train_split / eval_split.
  c.train_pattern = config_dict.placeholder(str)
  c.eval_pattern = config_dict.placeholder(str)
  c.num_classes = config_dict.placeholder(int)
  c.class_names_file = config_dict.placeholder(str)  # One name per line.

  c.train_steps = DEFAULT_TRAIN_STEPS
  c.eval_steps = DEFAULT_EVAL_STEPS
  # Training streams the global batch is drawn from, each reading its own
  # files; None: one per process. Fix it to keep the data order when the
  # number of hosts changes (vidjax/data/input_shards.py).
  c.input_shards = config_dict.placeholder(int)
  c.num_frames = 8  # Frames per clip (segments, for 'sample_segments').
  c.frame_stride = 2  # 8 frames span 15 of the 17 stored.
  c.crop_size = 48  # From 64 px frames.
  # crop_random_resized: not Inception's (0.08, 1), tiny crops could cut the
  # moving shape out.
  c.train_area_range = (0.5, 1.0)
  c.train_aspect_range = (3 / 4, 4 / 3)
  # crop_multi_scale (TSN).
  c.multi_scale_scales = TSN_SCALES
  c.multi_scale_max_distort = 1
  # Off: a mirrored left-to-right clip is a right-to-left one. With a
  # {label: mirrored label} map the flip swaps those labels.
  c.horizontal_flip = False
  c.flip_label_map = config_dict.placeholder(dict)
  c.color_jitter = 0.0  # Strength; 0 is off.
  c.normalization = 'imagenet'  # A transforms.NORMALIZATION preset.
  c.mean = config_dict.placeholder(tuple)  # Both set: override the preset.
  c.std = config_dict.placeholder(tuple)

  # Evaluation: clips x crops views per video, scores averaged per video.
  c.num_test_clips = 1
  c.num_test_crops = 1  # 1 (centre) or 3 (along the long side).
  c.eval_resize_ratio = 1.15  # Short side 55, then crops of 48.
  c.reverse_time = False  # Evaluate on time-reversed clips.
  # Counted in raw serialized clips (~25 KB each here; Kinetics clips are
  # megabytes, size it accordingly).
  c.shuffle_buffer = 1024
  return c
