"""S3D-G on Something-Something-v2: 64x224² dense clips, no horizontal flip.

Data: the `ssv2` builder (source 12 fps, short side 256; prepare it first,
see docs/datasets.md), or DMVR/Scenic TFRecords you already have.

  python -m vidjax.main --config=configs/ssv2_s3dg.py \
      --workdir=workdirs/ssv2_s3dg --config.data.data_dir=/data/tfds
  # Fine-tune from Kinetics (a converted or trained checkpoint directory):
  python -m vidjax.main --config=configs/ssv2_s3dg.py \
      --workdir=workdirs/ssv2_s3dg --config.init_from=/ckpt/k400_s3dg
  # Existing TFRecords:
  python -m vidjax.main --config=configs/ssv2_s3dg.py \
      --workdir=workdirs/ssv2_s3dg --config.data.name=tfrecord \
      --config.data.train_pattern='/data/ssv2/train-*' \
      --config.data.eval_pattern='/data/ssv2/validation-*' \
      --config.data.num_classes=174

Choices:
  * no horizontal flip: SSv2 has left/right classes ("Pushing something
    from left to right"); a flip with `flip_label_map` (label -> mirrored
    label) is the alternative;
  * 64 consecutive frames: most SSv2 videos are 2-5 s at 12 fps (24-60
    frames), so shorter videos are padded by repeating their last frame
    (counted in the run summary). TSN-style segments
    (`sample_segments` in place of `sample_dense` in both step lists) see
    the whole video instead;
  * random resized crops (a scale jitter), Inception normalisation;
  * test: 1 clip x 3 crops (PySlowFast's SSv2 protocol);
  * optimiser: SGD, Nesterov momentum 0.9, weight decay 1e-4, learning rate
    0.1 at batch 64, warm-up then cosine over 60 epochs from scratch
    (PySlowFast fine-tunes SSv2 from Kinetics for 22 epochs at a lower rate:
    pass --config.init_from and e.g. --config.optimizer.learning_rate=0.03
    --config.total_steps=58000).
"""
import ml_collections
from ml_collections import config_dict

from vidjax.data import schema
from vidjax.parallel import mesh
from vidjax.train import periodic_eval

TRAIN_CLIPS = 168_913  # Videos in something-something-v2-train.json.
EPOCHS = 60
WARMUP_EPOCHS = 5


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model_name = 's3dg'
  config.model = ml_collections.ConfigDict(dict(dropout_rate=0.2))

  data = schema.default_data_config()
  data.name = 'ssv2'
  data.train_split = 'train'
  data.eval_split = 'validation'  # The test split has no labels.
  data.num_frames = 64
  data.frame_stride = 1
  data.crop_size = 224
  data.train_area_range = (0.3, 1.0)
  data.train_aspect_range = (3 / 4, 4 / 3)
  data.horizontal_flip = False
  data.normalization = 'inception'
  data.eval_resize_ratio = 256 / 224
  data.num_test_clips = 1
  data.num_test_crops = 3
  data.shuffle_buffer = 2048  # Records are ~0.5-1 MB.
  config.data = data

  config.batch_size = 64
  config.eval_batch_size = 64
  steps_per_epoch = TRAIN_CLIPS // config.batch_size
  config.total_steps = EPOCHS * steps_per_epoch
  config.label_smoothing = 0.0
  config.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
      warmup_steps=WARMUP_EPOCHS * steps_per_epoch))

  # Sharding: mesh ('data', 'time'), rules, FSDP (docs/scale.md). BN
  # statistics per device, as the paper's TF training computed them on each
  # of its GPUs; --config.bn_sync_devices=0 synchronises over the batch.
  config.update(mesh.default_config(bn_sync_devices=1))

  config.init_from = config_dict.placeholder(str)

  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3
  # One centre clip per validation video at every checkpoint; best kept.
  config.update(periodic_eval.default_config(every=2000))
  return config
