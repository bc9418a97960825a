"""TSM (or TSN) on Something-Something-v2: 8 or 16 segments, no flip.

  python -m vidjax.main --config=configs/ssv2_tsm.py \
      --workdir=workdirs/ssv2_tsm8 --config.data.data_dir=/data/tfds \
      --config.init_from=/ckpt/resnet50_in1k
  python -m vidjax.main --config=configs/ssv2_tsm.py:segments=16 \
      --workdir=workdirs/ssv2_tsm16 --config.init_from=/ckpt/resnet50_in1k

(/ckpt/resnet50_in1k: torchvision's ImageNet resnet50 converted with
`python -m vidjax.convert --model=tsm_r50`, docs/models.md.)

What follows the official code (README, "Something-Something" command) and
what is our choice:
  * ImageNet initialisation ("usually better" than Kinetics for SSv2, the
    official README), ResNet-50, shift 1/8 each way, blockres, dropout 0.5;
  * TSN segment sampling (one random frame per segment; segment centres at
    test): SSv2 videos are 2-5 s, so segments cover the whole action.
    `:sampling=dense` gives strided clips instead;
  * TSN's multi-scale crop and **no horizontal flip**: SSv2 has left/right
    classes ("Pushing something from left to right");
  * test: 1 clip × 1 centre crop (the official test script; the paper's
    SSv2 61.2 is this view);
  * optimiser: SGD momentum 0.9, weight decay 1e-4, lr 0.01 at batch 64,
    50 epochs; the official steps ×0.1 at epochs 20 and 40 and clips
    gradients at 20, we use warm-up (1 epoch) + cosine without clipping.
"""
from configs import tsm_common

TRAIN_CLIPS = 168_913  # Videos in something-something-v2-train.json.


def get_config(arg: str | None = None):
  # Segments by default; ':sampling=dense' (a later item) overrides it.
  options = tsm_common.parse_arg('sampling=uniform,' + (arg or ''))
  return tsm_common.make_config(
      options, dataset='ssv2', train_clips=TRAIN_CLIPS, batch_size=64,
      learning_rate=0.01, flip=False, test_views=(1, 1), shuffle_buffer=2048)
