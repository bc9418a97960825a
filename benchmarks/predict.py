"""`vidjax.predict` end to end on an H.264 file, against the PyTorch path.

  bash run.sh python benchmarks/predict.py                  # demo and s3dg
  bash run.sh python benchmarks/predict.py --models=s3dg --seconds=10 \
      --rounds=3 --json=/tmp/predict.json
  bash run.sh python benchmarks/predict.py --video=my.mp4 --models=s3dg

One step is one video predicted from its file: decode (PyAV), the
checkpoint's contract (vidjax: `video_input`, JPEG round trip as predict
does by default; --no-jpeg_roundtrip leaves it out), the multi-view test
(num_test_clips x num_test_crops views, softmax averaged), in batches of
--batch views. The video is a real H.264 file (libx264, yuv420p) of
--seconds of moving texture at each model's preparation frame rate and
short side, written once before the rounds (or --video for all models).

Models (MODELS):
  demo  configs/demo.py: S3D-G at depth multiplier 0.25, 8x48² clips of
        64-px frames, 1 view. torchvision has no such model, so it runs
        alone (its clips/s per core is the figure).
  s3dg  configs/kinetics400_s3dg.py: S3D-G at 64x224² clips of 256-px
        frames at 25 fps, 10 clips x 3 crops. The peer is the path a user
        would otherwise write: PyAV decode of every frame, the short side
        to 256, the same 10x3 views (64 frames each, evenly spaced clips,
        three 224² crops along the long side), torchvision's S3D (S3D-G
        without its gating; the nearest model torchvision ships) under
        torch.no_grad() in batches of --batch, softmax averaged.
  tiny  a ResNet-18 TSM at width 8 on 4x24² clips, 2x3 views, alone: the
        smoke test of this script's code path
        (tests/benchmarks/test_predict_benchmark.py).

Weights are random (He-scaled, batch norm near the identity): speed does
not depend on them. Each side runs alone in its own process through
benchmarks/harness.py, rounds alternating; the vidjax side on the measured
best XLA flags, PyTorch as its CPU guide recommends (cpu_settings.py:
channels_last_3d model and clips, TCMalloc or jemalloc, one pinned thread
per physical core). Reported: seconds per video, clips (views) per second
per core, and torch / vidjax (> 1: vidjax is faster).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from typing import Any, Callable

_START = time.perf_counter()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import cpu_settings  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import timed_steps  # pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax.errors import VidjaxError  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_CLASSES = 400


@dataclasses.dataclass(frozen=True)
class Model:
  """A benchmarked model: its config, what preparation did, the peer."""
  config: Callable[[], Any]
  preparation: dict  # The contract's fps, short_side, jpeg_quality.
  frame_size: tuple[int, int]  # (height, width) of the test video.
  torch_peer: bool


def _demo_config():
  from configs import demo  # pylint: disable=g-import-not-at-top
  return demo.get_config()


def _s3dg_config():
  from configs import kinetics400_s3dg  # pylint: disable=g-import-not-at-top
  return kinetics400_s3dg.get_config()


def _tiny_config():
  from vidjax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.default_config()
  config.model_name = 'tsm_r18'
  config.model.width = 8
  config.data.update(num_frames=4, crop_size=24, num_test_clips=2,
                     num_test_crops=3)
  return config


MODELS = {
    'demo': Model(_demo_config, {'fps': 'source', 'short_side': 64,
                                 'jpeg_quality': 90}, (64, 64), False),
    's3dg': Model(_s3dg_config, {'fps': 25.0, 'short_side': 256,
                                 'jpeg_quality': 90}, (256, 340), True),
    # torchvision's S3D needs >= 13 frames of >= 209 px: no peer.
    'tiny': Model(_tiny_config, {'fps': 10.0, 'short_side': 32,
                                 'jpeg_quality': 90}, (32, 48), False),
}
DEFAULT_MODELS = ('demo', 's3dg')
VIDEO_FPS = 25.0  # Of the test video when the contract keeps the source's.


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--models', default=','.join(DEFAULT_MODELS),
                 help='comma-separated, of: ' + ', '.join(MODELS))
  p.add_argument('--seconds', type=float, default=10.0,
                 help='length of the test video')
  p.add_argument('--video', default=None,
                 help='an existing video file, for every model (default: '
                 'one written per model)')
  p.add_argument('--batch', type=int, default=6, help='views per model call')
  p.add_argument('--jpeg_roundtrip', default=True,
                 action=argparse.BooleanOptionalAction,
                 help="vidjax: frames JPEG-encoded at the contract's quality "
                 "as prepared records hold them (predict's default)")
  harness.add_step_flags(p, iters=3, warmup=1)
  cpu_settings.add_torch_flags(p)
  # The side's own process: set by the runner, not by hand.
  p.add_argument('--side', choices=('vidjax', 'torch'), help=argparse.SUPPRESS)
  p.add_argument('--model', choices=tuple(MODELS), help=argparse.SUPPRESS)
  return p.parse_args(argv)


# ---------------------------------------------------------------- shared


def contract_of(name: str):
  from vidjax.inference import contract as contract_lib  # pylint: disable=g-import-not-at-top
  spec = MODELS[name]
  return contract_lib.from_config(spec.config(), num_classes=NUM_CLASSES,
                                  class_names=None,
                                  preparation=spec.preparation)


def write_video(path: str, name: str, seconds: float) -> str:
  """A real H.264 file of moving texture at the model's preparation rate
  and size."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vidjax.data import video_io  # pylint: disable=g-import-not-at-top
  spec = MODELS[name]
  fps = spec.preparation['fps']
  fps = VIDEO_FPS if fps == 'source' else float(fps)
  height, width = spec.frame_size
  y, x = np.mgrid[:height, :width].astype(np.float32)
  frames = np.empty((max(1, round(seconds * fps)), height, width, 3),
                    np.uint8)
  for i in range(len(frames)):
    for c in range(3):
      wave = np.sin((x + 3 * i) / (9 + 4 * c)) * np.cos((y - 2 * i) / 13)
      frames[i, ..., c] = (128 + 100 * wave).astype(np.uint8)
  video_io.encode_video(path, frames, fps)
  return path


def random_variables(model, clip_shape):
  """He-scaled kernels, batch norm near the identity: from the shapes alone
  (no initialisation is compiled)."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  clip = jax.ShapeDtypeStruct(clip_shape, np.float32)
  abstract = nn.unbox(jax.eval_shape(
      lambda x: model.init(jax.random.key(0), x, train=False), clip))
  rng = np.random.default_rng(0)

  def draw(path, leaf):
    name = path[-1].key
    if name in ('var', 'scale'):
      return np.ones(leaf.shape, np.float32)
    if name in ('mean', 'bias'):
      return np.zeros(leaf.shape, np.float32)
    scale = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) * scale).astype(np.float32)

  return jax.tree_util.tree_map_with_path(
      draw, {k: abstract[k] for k in ('params', 'batch_stats')})


def _side_info(contract, args) -> dict:
  return {'model': args.model, 'views': contract.num_views,
          'clip': f'{contract.num_frames}x{contract.crop_size}^2',
          'video': args.video, 'batch': args.batch}


# ----------------------------------------------------------- vidjax side


def vidjax_step(args):
  """(step, contract): one `predict_videos` of args.video per call."""
  from vidjax.inference import batching  # pylint: disable=g-import-not-at-top
  from vidjax.inference import loader  # pylint: disable=g-import-not-at-top
  from vidjax.inference import predict  # pylint: disable=g-import-not-at-top
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top

  contract = contract_of(args.model)
  model = create_model(contract.model_name, num_classes=NUM_CLASSES,
                       **contract.model_options)
  variables = random_variables(model, (1, contract.num_frames,
                                       contract.crop_size,
                                       contract.crop_size, 3))
  loaded = loader.Loaded(model, variables, contract,
                         loader.Source(path=args.video, kind='converted'))
  options = predict.Options(batch_size=args.batch,
                            jpeg_roundtrip=args.jpeg_roundtrip)
  runner = batching.ViewRunner(model, variables, args.batch)

  def step():
    results, failures = predict.predict_videos(loaded, [args.video], options,
                                               runner=runner)
    if failures:
      raise VidjaxError(f'{failures[0].path}: {failures[0].reason}')
    return results[0].windows[0].scores
  return step, contract


def vidjax_side(args):
  timed_steps.cpu_only()
  import jax  # pylint: disable=g-import-not-at-top
  step, contract = vidjax_step(args)
  threads = len(os.sched_getaffinity(0))
  harness.run_side(step, warmup=args.warmup, iters=args.iters,
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(
                       threads, jpeg_roundtrip=args.jpeg_roundtrip),
                   info={**_side_info(contract, args), 'jax': jax.__version__})


# ------------------------------------------------------------ torch side


def torch_views(path, contract, fmt):
  """The views a user would make with PyAV and torch: [V, 3, T, S, S]."""
  import av  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top

  with av.open(path) as container:
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    frames = np.stack([f.to_ndarray(format='rgb24')
                       for f in container.decode(stream)])
  video = torch.from_numpy(frames).permute(0, 3, 1, 2)  # T, C, H, W
  n, _, h, w = video.shape
  short = contract.eval_short_side
  video = video.float()
  if min(h, w) != short:
    h, w = ((short, round(w * short / h)) if h <= w
            else (round(h * short / w), short))
    video = F.interpolate(video, size=(h, w), mode='bilinear',
                          antialias=True, align_corners=False)
  t, size = contract.num_frames, contract.crop_size
  span = (t - 1) * contract.frame_stride + 1
  starts = np.linspace(0, max(n - span, 0), contract.num_test_clips)
  long_side, landscape = max(h, w), w >= h
  slack = long_side - size
  offsets = ((0, slack // 2, slack) if contract.num_test_crops == 3
             else (slack // 2,))
  across = (min(h, w) - size) // 2
  mean = torch.tensor(contract.mean).view(1, 3, 1, 1) * 255
  std = torch.tensor(contract.std).view(1, 3, 1, 1) * 255
  views = []
  for start in starts:
    index = np.minimum(round(start) + np.arange(t) * contract.frame_stride,
                       n - 1)
    clip = (video[torch.from_numpy(index)] - mean) / std
    for along in offsets:
      y, x = (across, along) if landscape else (along, across)
      views.append(clip[:, :, y:y + size, x:x + size].permute(1, 0, 2, 3))
  return torch.stack(views).contiguous(memory_format=fmt)


def torch_step(args):
  """(step, contract, model, fmt): torchvision S3D on args.video's views."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  contract = contract_of(args.model)
  torch.manual_seed(0)
  fmt = cpu_settings.memory_format(args.torch_layout, spatial_dims=3)
  model = torchvision.models.video.s3d(num_classes=NUM_CLASSES).to(
      memory_format=fmt).eval()

  def step():
    views = torch_views(args.video, contract, fmt)
    with torch.no_grad():
      probs = [torch.softmax(model(views[i:i + args.batch]), dim=-1)
               for i in range(0, len(views), args.batch)]
    return torch.cat(probs).mean(0)
  return step, contract, model, fmt


def torch_side(args):
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  step, contract, model, fmt = torch_step(args)
  threads = torch.get_num_threads()
  harness.run_side(step, warmup=args.warmup, iters=args.iters,
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(
                       threads, memory_format=str(fmt).split('.')[-1],
                       weights=cpu_settings.weights_format(model)),
                   info={**_side_info(contract, args),
                         'torch': torch.__version__,
                         'torchvision': torchvision.__version__})


# ---------------------------------------------------------------- runner


def sides(args, name: str, video: str) -> list[harness.Side]:
  common = [sys.executable, os.path.abspath(__file__), f'--model={name}',
            f'--video={video}', f'--batch={args.batch}',
            f'--iters={args.iters}', f'--warmup={args.warmup}']
  roundtrip = ('--jpeg_roundtrip' if args.jpeg_roundtrip
               else '--no-jpeg_roundtrip')
  out = [harness.Side('vidjax', common + [roundtrip, '--side=vidjax'],
                      {'XLA_FLAGS': cpu_settings.BEST_XLA_FLAGS})]
  if MODELS[name].torch_peer:
    out.append(harness.Side(
        'torch', common + cpu_settings.torch_side_flags(args)
        + ['--side=torch'],
        {**cpu_settings.torch_settings_from(args).env(), 'XLA_FLAGS': None}))
  return out


def clips_per_core(side: dict) -> float:
  """Views per second per compute thread, from a `measure` side summary."""
  return side['info']['views'] / side['median_s'] / max(1, side['threads'])


def table(rows: list[tuple[str, dict]]) -> list[str]:
  lines = [f'{"model":6s} {"views":>5s} {"vidjax s":>9s} {"clips/s/core":>13s}'
           f' {"torch s":>9s} {"clips/s/core":>13s} {"torch/vidjax":>13s}']
  for name, result in rows:
    v = result['sides']['vidjax']
    line = (f'{name:6s} {v["info"]["views"]:5d} {v["median_s"]:9.3f} '
            f'{clips_per_core(v):13.3f}')
    t = result['sides'].get('torch')
    if t:
      q = result['ratios']['torch / vidjax']
      line += (f' {t["median_s"]:9.3f} {clips_per_core(t):13.3f} '
               f'{q["value"]:13.2f}')
    else:
      line += f' {"-":>9s} {"-":>13s} {"-":>13s}'
    lines.append(line)
  lines.append('torch/vidjax: torch seconds per video over vidjax\'s (> 1: '
               'vidjax is faster); clips/s/core: views per second per '
               'compute thread, decode included.')
  return lines


def main(argv=None):
  args = _parse(argv)
  if args.side == 'vidjax':
    return vidjax_side(args)
  if args.side == 'torch':
    return torch_side(args)
  names = harness.choose(args.models, tuple(MODELS), 'models')
  if args.batch < 1:
    raise VidjaxError(f'--batch must be >= 1, got {args.batch}')
  print(f'predict end to end, one H.264 video per step; torch: '
        f'{cpu_settings.torch_settings_from(args).line()}', flush=True)
  rows = []
  with tempfile.TemporaryDirectory(prefix='vidjax-predict-bench-') as tmp:
    for name in names:
      video = args.video or write_video(os.path.join(tmp, f'{name}.mp4'),
                                        name, args.seconds)
      rows.append((name, harness.measure(sides(args, name, video),
                                         rounds=args.rounds, label=name)))
  print()
  for line in table(rows):
    print(line)
  harness.write_comparisons(args.json, args,
                            [{'model': n, **r} for n, r in rows])
  return rows


if __name__ == '__main__':
  harness.cli_main(main)
