"""S3D-G on Kinetics-400 from scratch: 64x224² dense clips (Xie et al. 2018).

Data: the `kinetics400` builder (25 fps, short side 256; prepare it first,
see docs/datasets.md), or DMVR/Scenic TFRecords you already have.

  python -m vidjax.main --config=configs/kinetics400_s3dg.py \
      --workdir=workdirs/k400_s3dg --config.data.data_dir=/data/tfds
  # Existing TFRecords (SequenceExamples, one JPEG per frame):
  python -m vidjax.main --config=configs/kinetics400_s3dg.py \
      --workdir=workdirs/k400_s3dg --config.data.name=tfrecord \
      --config.data.train_pattern='/data/k400/train-*' \
      --config.data.eval_pattern='/data/k400/validation-*' \
      --config.data.num_classes=400

What follows the paper and the usual recipes, and what is our choice:
  * clips: 64 consecutive frames at 25 fps (2.56 s), random 224² crops of
    256-px frames and horizontal flips, as I3D/S3D-G trained; Inception
    normalisation ([-1, 1]), what the TF-slim checkpoints expect;
  * test: 10 clips x 3 crops of the 256-px short side, softmax averaged per
    video (PySlowFast's Kinetics protocol; S3D-G's paper ran the whole
    250-frame video through the network instead). `num_test_clips=4`
    already covers a 10 s video with 64-frame clips at 1/3 the cost;
  * optimiser: SGD, Nesterov momentum 0.9, weight decay 1e-4 (not on BN or
    biases), learning rate 0.1 at batch 64 with linear warm-up (34 of 196
    epochs) and cosine decay: PySlowFast's Kinetics schedule. The paper
    used synchronous SGD with batch 6 per GPU on 56 GPUs; its exact
    schedule is not published in full;
  * batch 64 = 8 clips per chip of a TPU v5e-8 (a memory estimate for bf16
    training of 64x224² clips, not a measurement).
"""
import ml_collections
from ml_collections import config_dict

from vidjax.data import schema
from vidjax.parallel import mesh
from vidjax.train import periodic_eval

# Clips in the Kinetics-400 training CSV that are typically still available
# (~240k of 246k); only sets the length of the schedule.
TRAIN_CLIPS = 240_000
EPOCHS = 196
WARMUP_EPOCHS = 34


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.model_name = 's3dg'
  # TF-slim's dropout (keep 0.8) and BN momentum (0.999: a long run).
  config.model = ml_collections.ConfigDict(dict(dropout_rate=0.2))

  data = schema.default_data_config()
  data.name = 'kinetics400'
  data.train_split = 'train'
  data.eval_split = 'validation'
  data.num_frames = 64
  data.frame_stride = 1
  data.crop_size = 224
  data.train_steps = tuple('crop_random' if s == 'crop_random_resized' else s
                           for s in schema.DEFAULT_TRAIN_STEPS)
  data.horizontal_flip = True
  data.normalization = 'inception'
  data.eval_resize_ratio = 256 / 224  # Short side 256, then 224² crops.
  data.num_test_clips = 10
  data.num_test_crops = 3
  # Raw records are ~4 MB (250 JPEGs at 256 px): ~4 GB of host memory.
  data.shuffle_buffer = 1024
  config.data = data

  config.batch_size = 64
  config.eval_batch_size = 64  # Views, not videos.
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
