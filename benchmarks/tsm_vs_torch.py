"""vidjax TSM-R50 against the official-style PyTorch TSM on this CPU.

  bash run.sh python benchmarks/tsm_vs_torch.py                    # defaults
  bash run.sh python benchmarks/tsm_vs_torch.py --kinds=train --settings=ynn \
      --rounds=5 --json=/tmp/tsm.json

Same network on both sides: ResNet-50 v1.5 with 1/8 of the channels shifted
each way before conv1 of every block ('blockres'), TSN's head, 400 classes;
vidjax's `tsm_r50` against benchmarks/torch_tsm.py (torchvision's resnet50
with the official shift wrapper). Clips of 8 segments × 224², float32, the
same batch. Kinds (benchmarks/timed_steps.py): 'infer' (eval forward), 'train'
(forward + backward + SGD) and 'stream', the online model
(`tsm_online_r50`; online_demo's buffers in PyTorch) fed one 224² frame of
one stream per step, in frames per second.

Measured with benchmarks/harness.py: each (setting, kind) runs every side
alone in a fresh process, --rounds times, alternating vidjax and torch; a
side builds its model, runs --warmup steps (vidjax compiles in the first;
reported apart) and times --iters steps. Printed per side: median step,
per-round spread, set-up and warm-up, threads and environment; then
torch / vidjax (> 1: vidjax is faster) and the machine's matmul rate.

PyTorch runs as its CPU performance guide recommends (cpu_settings.py):
the ResNet and its [N·T, C, H, W] frames in `channels_last`, TCMalloc or
jemalloc preloaded, one OpenMP thread per physical core, pinned.
`--torch-layout=contiguous --torch-allocator=glibc --torch-threads=default`
is the peer of the figures before 2026-12-07, PyTorch as it comes.

Settings: XLA_FLAGS for the vidjax side only ('ynn', the default: YNNPACK
for dots and reductions, the measured best flags, see
s3d_vs_torchvision.py; 'default': XLA's own).
Asked for by name only: 'dp2' and 'ynn-dp2' also give XLA:CPU two host
devices and split the batch over them, data parallel
(timed_steps.host_data_parallel), because YNNPACK runs the 64-channel convs on
one thread and two concurrent halves of the batch fill both cores. PyTorch
keeps its one process with intra-op threads, as a user runs it. The
stream kind has one stream, so it stays on one device.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

_START = time.perf_counter()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import cpu_settings  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import timed_steps  # pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax.errors import VidjaxError  # pylint: disable=g-import-not-at-top,wrong-import-position

NUM_CLASSES = 400
_YNN = cpu_settings.BEST_XLA_FLAGS
# Two host devices, the batch split over them: see timed_steps.host_data_parallel.
_TWO_DEVICES = '--xla_force_host_platform_device_count=2'
XLA_SETTINGS = {
    'default': '',
    'ynn': _YNN,
    'dp2': _TWO_DEVICES,
    'ynn-dp2': f'{_YNN} {_TWO_DEVICES}',
}
# Settings that stay off unless asked for: they change how vidjax runs the
# batch, not only which kernels it uses.
OPT_IN = ('dp2', 'ynn-dp2')
DEFAULT_SETTINGS = ('ynn',)
KINDS = ('infer', 'train', 'stream')


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=2, help='clips per step')
  p.add_argument('--segments', type=int, default=8)
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--depth', type=int, default=50, choices=(18, 34, 50, 101))
  harness.add_step_flags(p)
  p.add_argument('--settings', default=','.join(DEFAULT_SETTINGS),
                 help='comma-separated XLA flag settings, of: '
                 + ', '.join(XLA_SETTINGS) + f' ({", ".join(OPT_IN)}: '
                 'two devices, asked for by name only)')
  p.add_argument('--kinds', default=','.join(KINDS),
                 help='comma-separated, of: ' + ', '.join(KINDS))
  cpu_settings.add_torch_flags(p)
  # The side's own process: set by the runner, not by hand.
  p.add_argument('--side', choices=('vidjax', 'torch'), help=argparse.SUPPRESS)
  p.add_argument('--kind', choices=KINDS, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for name in ('batch', 'segments', 'size', 'iters', 'rounds'):
    if getattr(args, name) < 1:
      raise VidjaxError(f'--{name} must be >= 1, not {getattr(args, name)}')
  return args


def vidjax_side(args):
  timed_steps.cpu_only()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top
  from vidjax.models import resnet  # pylint: disable=g-import-not-at-top

  family = 'tsm_online' if args.kind == 'stream' else 'tsm'
  model = create_model(f'{family}_r{args.depth}', num_classes=NUM_CLASSES,
                       num_segments=args.segments)
  video = jax.random.normal(
      jax.random.key(0),
      (args.batch, args.segments, args.size, args.size, 3))
  labels = jnp.arange(args.batch) % NUM_CLASSES
  variables = jax.block_until_ready(jax.jit(model.init)(jax.random.key(1),
                                                        video))
  # One stream is one frame: nothing to split, so it runs on one device.
  parallel = (None if args.kind == 'stream'
              else timed_steps.host_data_parallel(args.batch))
  if args.kind == 'infer':
    step = timed_steps.vidjax_infer(model, variables, video, parallel)
  elif args.kind == 'train':
    step = timed_steps.vidjax_train(model, variables, video, labels, parallel)
  else:
    frame = video[:1, 0]
    state = [resnet.init_stream_state(model, variables, frame.shape)]
    stream_step = jax.jit(
        lambda v, x, s: model.apply(v, x, state=s), donate_argnums=(2,))

    def step():
      logits, state[0] = stream_step(variables, frame, state[0])
      jax.block_until_ready(logits)
  threads = len(os.sched_getaffinity(0))
  harness.run_side(step, warmup=args.warmup, iters=_iters(args),
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(threads),
                   info={'jax': jax.__version__,
                         'devices': 1 if parallel is None else
                                    parallel.mesh.size})


def torch_model_and_data(args):
  """The PyTorch TSM, a clip batch [N, T, 3, H, W] and labels, in
  --torch-layout. The ResNet runs on the frames [N·T, C, H, W], a 2-D CNN,
  so its weights take `channels_last`, and each frame is stored channels
  minor (NTHWC in memory), so that the [N·T, C, H, W] view the model
  takes (`flatten(0, 1)`) is channels_last without a copy."""
  import torch  # pylint: disable=g-import-not-at-top
  from benchmarks import torch_tsm  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  fmt = cpu_settings.memory_format(args.torch_layout, spatial_dims=2)
  model = torch_tsm.TSM(args.depth, NUM_CLASSES, args.segments,
                        online=args.kind == 'stream').to(memory_format=fmt)
  video = torch.randn(args.batch, args.segments, 3, args.size, args.size)
  if args.torch_layout == 'channels_last':
    video = video.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
  labels = torch.arange(args.batch) % NUM_CLASSES
  return model, video, labels


def torch_side(args):
  import torch  # pylint: disable=g-import-not-at-top

  model, video, labels = torch_model_and_data(args)
  if args.kind == 'infer':
    step = timed_steps.torch_infer(model, video)
  elif args.kind == 'train':
    step = timed_steps.torch_train(model, video, labels)
  else:
    frame = video[:1, :1]
    step = timed_steps.torch_infer(model, frame)  # The buffers carry over.
  threads = torch.get_num_threads()
  harness.run_side(step, warmup=args.warmup, iters=_iters(args),
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(
                       threads,
                       memory_format=cpu_settings.format_of(
                           video.flatten(0, 1)),
                       weights=cpu_settings.weights_format(model)),
                   info={'torch': torch.__version__})


def _iters(args) -> int:
  # A stream step is one frame: time a clip's worth per requested step.
  return args.iters * (args.segments if args.kind == 'stream' else 1)


def sides(args, setting: str, kind: str) -> list[harness.Side]:
  common = [sys.executable, os.path.abspath(__file__), f'--kind={kind}',
            f'--batch={args.batch}', f'--segments={args.segments}',
            f'--size={args.size}', f'--depth={args.depth}',
            f'--iters={args.iters}', f'--warmup={args.warmup}']
  torch_env = cpu_settings.torch_settings_from(args).env()
  return [
      harness.Side('vidjax', common + ['--side=vidjax'],
                   {'XLA_FLAGS': XLA_SETTINGS[setting]}),
      # Unset: PyTorch does not read it.
      harness.Side('torch', common + cpu_settings.torch_side_flags(args)
                   + ['--side=torch'], {**torch_env, 'XLA_FLAGS': None}),
  ]


def main():
  args = _parse()
  if args.side == 'vidjax':
    return vidjax_side(args)
  if args.side == 'torch':
    return torch_side(args)
  settings = harness.choose(args.settings, XLA_SETTINGS, 'settings')
  kinds = harness.choose(args.kinds, KINDS, 'kinds')
  print(f'TSM-R{args.depth}, {args.batch} clips of {args.segments}×'
        f'{args.size}² (stream: 1 frame of 1 stream per step); per side and '
        f'round a fresh process: {args.warmup} warm-up then the timed steps',
        flush=True)
  print(f'torch: {cpu_settings.torch_settings_from(args).line()}',
        flush=True)
  results = harness.measure_grid(
      lambda setting, kind: sides(args, setting, kind), settings, kinds,
      rounds=args.rounds)
  print(f'\n{"setting":8s} {"kind":6s} {"vidjax ms":>10s} {"spread":>7s} '
        f'{"torch ms":>10s} {"spread":>7s} {"torch/vidjax":>13s} '
        f'{"per round":>10s} {"vidjax/s":>9s} {"torch/s":>8s}')
  for r in results:
    v, t = r['sides']['vidjax'], r['sides']['torch']
    q = r['ratios']['torch / vidjax']
    per_step = 1 if r['kind'] == 'stream' else args.batch
    print(f'{r["setting"]:8s} {r["kind"]:6s} {1e3 * v["median_s"]:10.1f} '
          f'{100 * v["spread_s"]["rel"]:6.1f}% {1e3 * t["median_s"]:10.1f} '
          f'{100 * t["spread_s"]["rel"]:6.1f}% {q["value"]:13.2f} '
          f'{min(q["per_round"]):4.2f}-{max(q["per_round"]):4.2f} '
          f'{per_step / v["median_s"]:9.2f} {per_step / t["median_s"]:8.2f}')
  print('torch/vidjax > 1: vidjax is faster. Rates: clips/s (infer, train), '
        'frames/s (stream). Spread: (max - min) / median of the per-round '
        'medians.')
  for line in harness.settings_lines(results):
    print(line)
  harness.write_comparisons(args.json, args, results)


if __name__ == '__main__':
  harness.cli_main(main)
