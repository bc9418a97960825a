"""What the TimeSformer configs share: the argument string and the recipe.

`--config=configs/kinetics400_timesformer.py:size=hr,scheme=joint`
(ml_collections' `path:arg`): comma-separated key=value pairs over
`DEFAULTS`. size: base (8×224), hr (16×448) or l (96×224); scheme: divided,
joint, space, local_global or axial.
"""
import ml_collections

from configs import arguments
from vidjax import config as config_lib

DEFAULTS = {'size': 'base', 'scheme': 'divided'}
# size → (model name prefix, frames, Kinetics frame stride, crop size),
# from the official configs TimeSformer_divST_{8x32_224, 16x16_448,
# 96x4_224}.yaml.
SIZES = {
    'base': ('timesformer', 8, 32, 224),
    'hr': ('timesformer_hr', 16, 16, 448),
    'l': ('timesformer_l', 96, 4, 224),
}
SCHEMES = ('divided', 'joint', 'space', 'local_global', 'axial')
EPOCHS = 15
# PySlowFast's 'steps_with_relative_lrs' ([0, 11, 14] → ×1, ×0.1, ×0.01)
# is replaced by our warm-up + cosine; one epoch of warm-up.
WARMUP_EPOCHS = 1
TRAIN_STEPS = ('parse', 'sample_dense', 'crop_random_resized', 'decode',
               'flip', 'resize', 'normalize')
EVAL_STEPS = config_lib.DEFAULT_EVAL_STEPS


def parse_arg(arg: str | None) -> dict:
  return arguments.parse(arg, DEFAULTS, {'size': tuple(SIZES),
                                         'scheme': SCHEMES})


def model_name(options: dict) -> str:
  prefix = SIZES[options['size']][0]
  return prefix if options['scheme'] == 'divided' else (
      f'{prefix}_{options["scheme"]}')


def make_config(options: dict, *, dataset: str, train_clips: int,
                segments: bool, flip: bool) -> ml_collections.ConfigDict:
  """The official recipe (configs/{Kinetics,SSv2}/TimeSformer_*.yaml)."""
  _, frames, stride, crop = SIZES[options['size']]
  config = config_lib.default_config()
  config.model_name = model_name(options)
  # The official VisionTransformer: no dropout, drop-path 0.1 over depth.
  config.model = ml_collections.ConfigDict(dict(drop_path_rate=0.1))

  data = config.data
  data.name = dataset
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.num_frames = frames
  data.frame_stride = stride
  data.crop_size = crop
  swap = {'sample_dense': 'sample_segments'} if segments else {}
  data.train_steps = tuple(swap.get(s, s) for s in TRAIN_STEPS)
  data.eval_steps = tuple(swap.get(s, s) for s in EVAL_STEPS)
  # PySlowFast's scale jitter (short side 256-320, then a crop_size square)
  # as a square crop of 0.7-0.875 of a 256-px frame's side, resized.
  data.train_area_range = (0.49, 0.77)
  data.train_aspect_range = (1.0, 1.0)
  data.horizontal_flip = flip
  data.normalization = 'slowfast'  # DATA.MEAN / DATA.STD: 0.45 / 0.225.
  data.eval_resize_ratio = 256 / 224  # Short side 256 (512 for HR).
  # TEST.NUM_ENSEMBLE_VIEWS 1 (the default num_test_clips) x
  # TEST.NUM_SPATIAL_CROPS 3.
  data.num_test_crops = 3

  # TRAIN.BATCH_SIZE 8 in total, BASE_LR 0.005.
  config.batch_size = 8
  config.eval_batch_size = 8
  steps_per_epoch = train_clips // config.batch_size
  config.total_steps = EPOCHS * steps_per_epoch
  config.optimizer.learning_rate = 0.005
  config.optimizer.nesterov = False
  config.optimizer.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
  return config
