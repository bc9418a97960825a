"""vidjax S3D against torchvision's S3D on this CPU: inference and training.

  bash run.sh python benchmarks/s3d_vs_torchvision.py               # defaults
  bash run.sh python benchmarks/s3d_vs_torchvision.py --batch=4 --frames=32 \
      --settings=ynn --kinds=train --rounds=5 --json=/tmp/s3d.json

Same model on both sides (vidjax's `s3d_torchvision` is torchvision's
layout, parameter for parameter; 400 classes), same batch and clip,
float32. "infer" is one forward pass in evaluation mode; "train" is one
forward+backward with batch-norm in training mode plus a plain SGD update
(optax.sgd inside the jitted step; torch.optim.SGD's step), as a training
loop runs it.

Measured with benchmarks/harness.py: each (setting, kind) runs every side
alone in a fresh process, --rounds times, alternating vidjax and torch, so
each framework is timed as a user runs it and drifting load hits both. A
side builds its model, runs --warmup steps (vidjax compiles in the first;
reported apart) and times --iters steps. Per side: median step, per-round
medians and their spread, set-up and warm-up times, threads and
environment; then torch / vidjax (> 1: vidjax is faster) and the machine's
matmul rate, to compare figures across machines.

Earlier figures were wrong. Until this version the script built both models
in ONE process and alternated vidjax and torch steps in it. Sharing the
process with JAX slowed PyTorch by up to ~1.9x, so it printed vidjax 1.96x
as fast at inference and 1.35x at training where, on the same machine, each
side alone in its own process gave 1.06-1.20x and 1.00-1.05x.
benchmarks/README.md has this harness's figures.

PyTorch runs as its CPU performance guide recommends (cpu_settings.py):
model and clips in `channels_last_3d`, TCMalloc or jemalloc preloaded, one
OpenMP thread per physical core, pinned. `--torch-layout=contiguous
--torch-allocator=glibc --torch-threads=default` is the peer of the figures
before 2026-12-07, PyTorch as it comes.

Settings (XLA_SETTINGS, SETTING_ENV): XLA_FLAGS reach only the vidjax side
(PyTorch does not read them); a setting's other environment (GLIBC_TUNABLES)
applies to both sides (the torch side's preloaded allocator, if any, does
not read it). The default is 'ynn', the measured best flags
(cpu_settings.BEST_XLA_FLAGS); 'ynn+keepmem' adds glibc told to keep freed
memory. A default run is 2 kinds x 3 rounds x 2 sides = 12 processes,
each with its own start-up (and, for vidjax, compilation), half of the old
default's two settings. Absolute figures want a quiet machine.
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
# XLA:CPU settings compared. XLA:CPU can hand fusions of some kinds to the
# YNNPACK library; `--xla_cpu_experimental_ynn_fusion_type` picks which, and an
# explicit list replaces the default one (which holds convolutions, slower
# than XLA's own Eigen convs here). 'ynn' gives YNNPACK the dots (1×1×1
# convs) and the reductions (BN statistics); 'ynn+eltwise' also elementwise
# fusions, whose inputs YNNPACK wants materialised at full size (BN's
# per-channel factors, ReLU's zeros), which costs more than it saves.
XLA_SETTINGS = {
    'default': '',
    'ynn': cpu_settings.BEST_XLA_FLAGS,
    'ynn+eltwise': '--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce',
    # 'ynn' with glibc's allocator told to keep freed memory (one arena, no
    # mmap, no trimming) for both frameworks. By default every step maps
    # fresh pages for its large buffers and the kernel zeroes them (~1 GB a
    # step on either side); kept, they are reused. PyTorch gains much more
    # from this than XLA, whose many small scratch allocations then contend
    # for the single arena.
    'ynn+keepmem': cpu_settings.BEST_XLA_FLAGS,
}
# Extra environment per setting (both frameworks run under it).
SETTING_ENV = {
    'ynn+keepmem': {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=1:'
                                      'glibc.malloc.mmap_max=0:'
                                      'glibc.malloc.trim_threshold=17179869184'},
}
DEFAULT_SETTINGS = ('ynn',)
KINDS = ('infer', 'train')


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=2)
  # torchvision's head (a 2×7×7 VALID pool) needs >= 13 frames of >= 209 px.
  p.add_argument('--frames', type=int, default=16)
  p.add_argument('--size', type=int, default=224)
  harness.add_step_flags(p)
  p.add_argument('--settings', default=','.join(DEFAULT_SETTINGS),
                 help='comma-separated XLA flag settings to run, of: '
                 + ', '.join(XLA_SETTINGS))
  p.add_argument('--kinds', default=','.join(KINDS),
                 help='comma-separated, of: ' + ', '.join(KINDS))
  cpu_settings.add_torch_flags(p)
  # The side's own process: set by the runner, not by hand.
  p.add_argument('--side', choices=('vidjax', 'torch'), help=argparse.SUPPRESS)
  p.add_argument('--kind', choices=KINDS, help=argparse.SUPPRESS)
  return p.parse_args(argv)


def vidjax_side(args):
  timed_steps.cpu_only()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top

  model = create_model('s3d_torchvision', num_classes=NUM_CLASSES)
  video = jax.random.normal(
      jax.random.key(0), (args.batch, args.frames, args.size, args.size, 3))
  labels = jnp.arange(args.batch) % NUM_CLASSES
  variables = jax.block_until_ready(jax.jit(model.init)(jax.random.key(1),
                                                        video))
  step = (timed_steps.vidjax_infer(model, variables, video)
          if args.kind == 'infer' else
          timed_steps.vidjax_train(model, variables, video, labels))
  # XLA:CPU sizes its thread pool to the CPUs this process may use.
  threads = len(os.sched_getaffinity(0))
  harness.run_side(step, warmup=args.warmup, iters=args.iters,
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(threads),
                   info={'jax': jax.__version__,
                         'devices': str(jax.devices())})


def torch_model_and_data(args):
  """torchvision's S3D, a clip batch and labels, in --torch-layout: the
  model's weights and the clips both in channels_last_3d, as the Channels
  Last tutorial converts a model and its input, or both contiguous."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  fmt = cpu_settings.memory_format(args.torch_layout, spatial_dims=3)
  model = torchvision.models.video.s3d(num_classes=NUM_CLASSES).to(
      memory_format=fmt)
  video = torch.randn(args.batch, 3, args.frames, args.size,
                      args.size).contiguous(memory_format=fmt)
  labels = torch.arange(args.batch) % NUM_CLASSES
  return model, video, labels


def torch_side(args):
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  model, video, labels = torch_model_and_data(args)
  step = (timed_steps.torch_infer(model, video) if args.kind == 'infer' else
          timed_steps.torch_train(model, video, labels))
  threads = torch.get_num_threads()
  harness.run_side(step, warmup=args.warmup, iters=args.iters,
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(
                       threads, memory_format=cpu_settings.format_of(video),
                       weights=cpu_settings.weights_format(model)),
                   info={'torch': torch.__version__,
                         'torchvision': torchvision.__version__})


def sides(args, setting: str, kind: str) -> list[harness.Side]:
  common = [sys.executable, os.path.abspath(__file__), f'--kind={kind}',
            f'--batch={args.batch}', f'--frames={args.frames}',
            f'--size={args.size}', f'--iters={args.iters}',
            f'--warmup={args.warmup}']
  env = dict(SETTING_ENV.get(setting, {}))
  torch_env = cpu_settings.torch_settings_from(args).env()
  return [
      harness.Side('vidjax', common + ['--side=vidjax'],
                   {**env, 'XLA_FLAGS': XLA_SETTINGS[setting]}),
      # Unset rather than inherited: PyTorch does not read it, and a value
      # in its report would suggest it does.
      harness.Side('torch', common + cpu_settings.torch_side_flags(args)
                   + ['--side=torch'],
                   {**env, **torch_env, 'XLA_FLAGS': None}),
  ]


def main():
  args = _parse()
  if args.side == 'vidjax':
    return vidjax_side(args)
  if args.side == 'torch':
    return torch_side(args)
  settings = harness.choose(args.settings, XLA_SETTINGS, 'settings')
  kinds = harness.choose(args.kinds, KINDS, 'kinds')
  clip = f'{args.batch}×{args.frames}×{args.size}²'
  print(f'S3D (torchvision layout, 8.3M params), batch×T×HW = {clip}; per '
        f'side and round a fresh process: {args.warmup} warm-up then '
        f'{args.iters} timed step(s)', flush=True)
  print(f'torch: {cpu_settings.torch_settings_from(args).line()}',
        flush=True)
  results = harness.measure_grid(
      lambda setting, kind: sides(args, setting, kind), settings, kinds,
      rounds=args.rounds)
  print(f'\n{"setting":11s} {"kind":5s} {"vidjax ms":>10s} {"spread":>7s} '
        f'{"torch ms":>10s} {"spread":>7s} {"torch/vidjax":>13s} '
        f'{"per round":>10s}')
  for r in results:
    v, t = r['sides']['vidjax'], r['sides']['torch']
    q = r['ratios']['torch / vidjax']
    print(f'{r["setting"]:11s} {r["kind"]:5s} {1e3 * v["median_s"]:10.1f} '
          f'{100 * v["spread_s"]["rel"]:6.1f}% {1e3 * t["median_s"]:10.1f} '
          f'{100 * t["spread_s"]["rel"]:6.1f}% {q["value"]:13.2f} '
          f'{min(q["per_round"]):4.2f}-{max(q["per_round"]):4.2f}')
  print('torch/vidjax > 1: vidjax is faster. Spread: (max - min) / median of '
        'the per-round medians.')
  for line in harness.settings_lines(results):
    print(line)
  harness.write_comparisons(args.json, args, results)


if __name__ == '__main__':
  harness.cli_main(main)
