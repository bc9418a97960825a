"""What the S3D-G configs share: the model and the recipe of 64x224² clips.

configs/kinetics400_s3dg.py and configs/ssv2_s3dg.py build on `make_config`
and set what their dataset needs (sampling, flips, test views, schedule).
The optimiser is vidjax/config.py's default: SGD, Nesterov momentum 0.9,
weight decay 1e-4 (not on BN or biases), learning rate 0.1 with linear
warm-up and cosine decay.
"""
import ml_collections

from vidjax import config as config_lib


def make_config(*, dataset: str, train_clips: int, epochs: int,
                warmup_epochs: int) -> ml_collections.ConfigDict:
  """S3D-G on `dataset` for `epochs` over `train_clips` at batch 64."""
  config = config_lib.default_config()
  config.model_name = 's3dg'
  # TF-slim's dropout (keep 0.8) and BN momentum (0.999, the model's
  # default: a long run).
  config.model = ml_collections.ConfigDict(dict(dropout_rate=0.2))

  data = config.data
  data.name = dataset
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.num_frames = 64
  data.frame_stride = 1
  data.crop_size = 224
  # What the TF-slim checkpoints expect: [-1, 1].
  data.normalization = 'inception'
  data.eval_resize_ratio = 256 / 224  # Short side 256, then 224² crops.

  config.batch_size = 64
  config.eval_batch_size = 64  # Views, not videos.
  steps_per_epoch = train_clips // config.batch_size
  config.total_steps = epochs * steps_per_epoch
  config.optimizer.warmup_steps = warmup_epochs * steps_per_epoch

  # BN statistics per device, as the paper's TF training computed them on
  # each of its GPUs; --config.bn_sync_devices=0 synchronises over the batch.
  config.bn_sync_devices = 1
  return config
