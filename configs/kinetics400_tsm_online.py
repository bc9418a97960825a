"""Online TSM-R50 on Kinetics-400: trained on 8-segment clips, run on streams.

Online TSM (Lin et al., ICCV 2019, sec. 5) is TSM with the uni-directional
(past → present) shift: trained on clips like any TSM, it then runs one
frame at a time with the shifted channels of the previous frame cached,
which is what `python -m vidjax.stream` does with this config.

  # Train (--config.init_from=DIR: torchvision's ImageNet ResNet-50
  # converted by python -m vidjax.convert --model=tsm_online_r50):
  python -m vidjax.main --config=configs/kinetics400_tsm_online.py \
      --workdir=workdirs/k400_tsm_online --config.data.data_dir=/data/tfds
  # Stream a video through the latest checkpoint of that workdir (or
  # through a python -m vidjax.convert output directory); the checkpoint's
  # preprocessing contract names the model and the frame geometry:
  python -m vidjax.stream --checkpoint=workdirs/k400_tsm_online \
      video.mp4 --top_k=5 --every=25
  # A smaller backbone: --config.model_name=tsm_online_r18

The recipe is configs/kinetics400_tsm.py's with TSN segment sampling
(`:sampling=uniform`, one frame of each of 8 equal parts; test on segment
centres, one centre crop), the frame geometry `vidjax.stream` uses (short
side crop_size × eval_resize_ratio, then the centre crop). Arguments pass
through: `configs/kinetics400_tsm_online.py:segments=16`.

Streaming sees consecutive frames (`--frame_stride` thins them), while
training segments of a 10 s clip are ~1.25 s apart: the shift mixes frames
closer in time than in training, as in the official online demo.
"""
from configs import kinetics400_tsm


def get_config(arg: str | None = None):
  return kinetics400_tsm.get_config(
      'model=tsm_online_r50,sampling=uniform,' + (arg or ''))
