"""TSM (or TSN) on Kinetics-400, 8 or 16 segments, dense or uniform sampling.

  python -m vidjax.main --config=configs/kinetics400_tsm.py \
      --workdir=workdirs/k400_tsm8 --config.data.data_dir=/data/tfds
  # 16 segments, TSN-style uniform sampling, from ImageNet weights
  # (torchvision's resnet50, converted: docs/models.md):
  python -m vidjax.convert --model=tsm_r50 --torch=resnet50.pth \
      --out=/ckpt/resnet50_in1k
  python -m vidjax.main \
      --config=configs/kinetics400_tsm.py:segments=16,sampling=uniform \
      --workdir=workdirs/k400_tsm16u --config.init_from=/ckpt/resnet50_in1k
  # TSN, the same recipe without the shift:
  python -m vidjax.main --config=configs/kinetics400_tsm.py:model=tsn_r50 \
      --workdir=workdirs/k400_tsn8

What follows the official code (mit-han-lab/temporal-shift-module, scripts/
train_tsm_kinetics_rgb_8f.sh) and what is our choice:
  * model: ResNet-50, 1/8 of the channels shifted each way in the residual
    branch, dropout 0.5 before the classifier, logits averaged over the
    segments; ImageNet mean/std normalisation;
  * dense sampling (the paper's Kinetics setting): T frames at stride
    64 // T from a random start; uniform: TSN's one random frame per
    segment (training) and segment centres (test);
  * augmentation: TSN's multi-scale crop (scales 1, .875, .75, .66 of the
    short side, corner or centre) resized to 224², horizontal flip;
  * test: dense, 10 clips × 3 crops of the 256-px short side (the paper's
    table); uniform, 1 clip × 1 centre crop (the official test script);
  * optimiser: SGD momentum 0.9, weight decay 1e-4 (not on BN or biases, as
    the official optimiser policies), lr 0.02 at batch 128, 50 epochs.
    The official schedule steps the rate down ×0.1 at epochs 20 and 40
    and clips gradients at norm 20; we use our warm-up (1 epoch) + cosine
    schedule without clipping, PySlowFast's choice for the same model;
  * batch 128 = 16 clips per chip of a TPU v5e-8.
"""
from configs import tsm_common

TRAIN_CLIPS = 240_000  # Kinetics-400 train clips still available (~240k).


def get_config(arg: str | None = None):
  options = tsm_common.parse_arg(arg)
  dense = options['sampling'] == 'dense'
  return tsm_common.make_config(
      options, dataset='kinetics400', train_clips=TRAIN_CLIPS,
      batch_size=128, learning_rate=0.02, flip=True,
      test_views=(10, 3) if dense else (1, 1), shuffle_buffer=1024)
