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
from configs import s3dg_common

TRAIN_CLIPS = 168_913  # Videos in something-something-v2-train.json.
EPOCHS = 60
WARMUP_EPOCHS = 5


def get_config():
  config = s3dg_common.make_config(
      dataset='ssv2', train_clips=TRAIN_CLIPS, epochs=EPOCHS,
      warmup_epochs=WARMUP_EPOCHS)
  data = config.data
  # eval_split stays 'validation': the test split has no labels. No
  # horizontal flip (the default): SSv2 has left/right classes.
  data.train_area_range = (0.3, 1.0)  # Random resized crops: scale jitter.
  data.num_test_crops = 3  # 1 clip x 3 crops: PySlowFast's SSv2 protocol.
  data.shuffle_buffer = 2048  # Records are ~0.5-1 MB.
  return config
