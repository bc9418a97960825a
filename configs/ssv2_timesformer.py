"""TimeSformer on Something-Something-v2: Base, HR or L, no flip.

  python -m vidjax.main --config=configs/ssv2_timesformer.py \
      --workdir=workdirs/ssv2_timesformer --config.data.data_dir=/data/tfds \
      --config.init_from=/ckpt/vit_b16_in21k
  python -m vidjax.main --config=configs/ssv2_timesformer.py:size=l \
      --workdir=workdirs/ssv2_timesformer_l

The official configs (configs/SSv2/TimeSformer_divST_8_224.yaml, 16_448,
64_224) and our choices:
  * TSN-style segment sampling (INV_UNIFORM_SAMPLE: one frame of each of T
    equal parts), no horizontal flip (SSv2 has left/right classes);
  * L: the official SSv2 'L' model takes 64 frames; the `l` size here keeps
    the Kinetics model's 96 (set --config.data.num_frames=64 to match);
  * everything else as configs/kinetics400_timesformer.py.
"""
from configs import timesformer_common

TRAIN_CLIPS = 168_913


def get_config(arg: str | None = None):
  options = timesformer_common.parse_arg(arg)
  return timesformer_common.make_config(
      options, dataset='ssv2', train_clips=TRAIN_CLIPS, segments=True,
      flip=False)
