"""TimeSformer on Kinetics-400: Base (8×224), HR (16×448) or L (96×224).

  python -m vidjax.main --config=configs/kinetics400_timesformer.py \
      --workdir=workdirs/k400_timesformer --config.data.data_dir=/data/tfds \
      --config.init_from=/ckpt/vit_b16_in21k
  python -m vidjax.main \
      --config=configs/kinetics400_timesformer.py:size=hr,scheme=joint \
      --workdir=workdirs/k400_timesformer_hr_joint

(/ckpt/vit_b16_in21k: ImageNet ViT-B/16 weights converted with
`python -m vidjax.convert`, as the paper initialises.)

The official configs (configs/Kinetics/TimeSformer_divST_8x32_224.yaml and
the 16x16_448 and 96x4_224 ones) and our choices:
  * clips: 8 frames at stride 32 (HR: 16 at 16; L: 96 at 4), crops of 224
    (HR 448), horizontal flips; PySlowFast's scale jitter (short side
    256-320, then a random crop) as a random square crop of 0.7-0.875 of
    the 256-px short side, resized; mean/std 0.45/0.225;
  * test: 1 clip × 3 crops of the 256-px short side (the paper's view);
  * SGD momentum 0.9, weight decay 1e-4 (not on norms or biases), lr 0.005
    at batch 8, 15 epochs; the official steps ×0.1 at epochs 11 and 14, we
    use warm-up + cosine;
  * drop-path 0.1 linear over depth, no dropout.
"""
from configs import timesformer_common

TRAIN_CLIPS = 240_000


def get_config(arg: str | None = None):
  options = timesformer_common.parse_arg(arg)
  return timesformer_common.make_config(
      options, dataset='kinetics400', train_clips=TRAIN_CLIPS, segments=False,
      flip=True)
