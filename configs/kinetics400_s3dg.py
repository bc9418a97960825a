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
from configs import s3dg_common

# Clips in the Kinetics-400 training CSV that are typically still available
# (~240k of 246k); only sets the length of the schedule.
TRAIN_CLIPS = 240_000
EPOCHS = 196
WARMUP_EPOCHS = 34


def get_config():
  config = s3dg_common.make_config(
      dataset='kinetics400', train_clips=TRAIN_CLIPS, epochs=EPOCHS,
      warmup_epochs=WARMUP_EPOCHS)
  data = config.data
  # Random 224² crops of 256-px frames (no scale jitter) and horizontal
  # flips, as I3D/S3D-G trained.
  data.train_steps = tuple('crop_random' if s == 'crop_random_resized' else s
                           for s in data.train_steps)
  data.horizontal_flip = True
  data.num_test_clips = 10
  data.num_test_crops = 3
  # The default shuffle_buffer of 1024 raw records: they are ~4 MB here (250
  # JPEGs at 256 px), ~4 GB of host memory.
  return config
