"""What the TSN/TSM configs share: the argument string and the model section.

A config takes `--config=configs/kinetics400_tsm.py:segments=16,sampling=
uniform,model=tsn_r50` (big_vision's `path:arg` convention of
ml_collections' config_flags): comma-separated key=value pairs over
`DEFAULTS`.
"""
import ml_collections

from configs import arguments
from vidjax import config as config_lib

DEFAULTS = {'segments': 8, 'sampling': 'dense', 'model': 'tsm_r50'}
SAMPLINGS = ('dense', 'uniform')
EPOCHS = 50
WARMUP_EPOCHS = 1
# TSN's augmentation in place of the Inception crop of the default lists
# (vidjax/config.py); colour jitter is not in TSM's recipe.
TRAIN_STEPS = ('parse', 'sample_dense', 'crop_multi_scale', 'decode', 'flip',
               'resize', 'normalize')
EVAL_STEPS = config_lib.DEFAULT_EVAL_STEPS
SEGMENTS = (8, 16)


def parse_arg(arg: str | None) -> dict:
  """'segments=16,sampling=uniform' → DEFAULTS updated; ValueError if bad."""
  return arguments.parse(arg, DEFAULTS, {'segments': SEGMENTS,
                                         'sampling': SAMPLINGS})


def model_config(segments: int) -> ml_collections.ConfigDict:
  """The official scripts' model: shift 1/8 each way, blockres, dropout 0.5."""
  return ml_collections.ConfigDict(dict(
      num_segments=segments, shift_div=8, placement='residual',
      temporal_pool=False, dropout_rate=0.5))


def sampling_steps(steps: tuple[str, ...], sampling: str) -> tuple[str, ...]:
  """Step lists with TSN's segment sampling in place of dense clips."""
  if sampling == 'dense':
    return tuple(steps)
  return tuple('sample_segments' if s == 'sample_dense' else s for s in steps)


def dense_stride(segments: int) -> int:
  # The official dense sampling: `segments` frames at stride 64 // segments
  # from a random position (8 frames at stride 8, 16 at stride 4).
  return 64 // segments


def make_config(options: dict, *, dataset: str, train_clips: int,
                batch_size: int, learning_rate: float, flip: bool,
                test_views: tuple[int, int],
                shuffle_buffer: int) -> ml_collections.ConfigDict:
  """The TSN/TSM training config; the dataset files set what differs."""
  segments = options['segments']
  config = config_lib.default_config()
  config.model_name = options['model']
  config.model = model_config(segments)

  data = config.data
  data.name = dataset
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.num_frames = segments
  data.frame_stride = dense_stride(segments)
  data.crop_size = 224
  data.train_steps = sampling_steps(TRAIN_STEPS, options['sampling'])
  data.eval_steps = sampling_steps(EVAL_STEPS, options['sampling'])
  data.horizontal_flip = flip
  # normalization: the default 'imagenet', what the ResNets were trained on.
  data.eval_resize_ratio = 256 / 224  # Short side 256, then 224² crops.
  data.num_test_clips, data.num_test_crops = test_views
  data.shuffle_buffer = shuffle_buffer

  config.batch_size = batch_size
  config.eval_batch_size = batch_size
  steps_per_epoch = train_clips // batch_size
  config.total_steps = EPOCHS * steps_per_epoch
  config.optimizer.learning_rate = learning_rate
  config.optimizer.nesterov = False
  config.optimizer.warmup_steps = WARMUP_EPOCHS * steps_per_epoch
  # bn_sync_devices stays 0, BN statistics over the global batch: PySlowFast
  # and MMAction2 train TSM with synchronised BN (the official DataParallel
  # code computes them per GPU; --config.bn_sync_devices=k does that).
  return config
