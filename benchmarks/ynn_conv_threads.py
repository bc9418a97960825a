"""Minimal reproduction: XLA:CPU's YNNPACK convs with 64 output channels run
on one thread.

  bash run.sh python benchmarks/ynn_conv_threads.py                # all cases
  bash run.sh python benchmarks/ynn_conv_threads.py --cases=out64 --rounds=5

One 3×3 stride-1 conv of a [16, 56, 56, 64] NHWC batch (ResNet-50's layer1
conv2 over 2 clips × 8 segments), followed by ReLU, with XLA's default
flags. Each case runs on every CPU of this machine and then pinned to one
(`os.sched_setaffinity` before jax is imported), each alone in a fresh
process, rounds alternating (benchmarks/harness.py); 'one CPU / all CPUs'
is what the other cores bring, about 1.0 when they bring nothing.

Cases:
  out64        64 → 64: the layer1 conv; YNNPACK runs it.
  out128       64 → 128: the same input, twice the output channels.
  out64-eigen  64 → 64 with one more row and column of padding at the end,
               dropped after the conv: YNNPACK declines a conv whose output
               is larger than its input (xla/backends/cpu/ynn_support.cc),
               so Eigen's conv runs it.

Each side prints whether its compiled HLO holds a YNNPACK fusion. What this
measured, and what it costs TSM-R50, is in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

_START = time.perf_counter()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import timed_steps  # pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax.errors import VidjaxError  # pylint: disable=g-import-not-at-top,wrong-import-position

INPUT_SHAPE = (16, 56, 56, 64)
# case → (output channels, extra padding at the end of H and W).
CASES = {'out64': (64, 0), 'out128': (128, 0), 'out64-eigen': (64, 1)}
CPUS = ('all', 'one')


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  harness.add_step_flags(p, iters=10, warmup=2, rounds=3)
  p.add_argument('--cases', default=','.join(CASES),
                 help='comma-separated, of: ' + ', '.join(CASES))
  p.add_argument('--case', choices=tuple(CASES), help=argparse.SUPPRESS)
  p.add_argument('--cpus', choices=CPUS, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for name in ('iters', 'rounds'):
    if getattr(args, name) < 1:
      raise VidjaxError(f'--{name} must be >= 1, not {getattr(args, name)}')
  return args


def conv_relu(x, kernel, extra: int):
  """3×3 'SAME' conv + ReLU; `extra` rows and columns padded at the end of
  H and W and cropped from the output again (the same values)."""
  import jax  # pylint: disable=g-import-not-at-top
  pad = ((1, 1 + extra), (1, 1 + extra))
  y = jax.lax.conv_general_dilated(
      x, kernel, (1, 1), pad, dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  if extra:
    y = y[:, :-extra, :-extra]
  return jax.nn.relu(y)


def side(args):
  if args.cpus == 'one':
    # Before jax starts its thread pools, which size themselves by this.
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  timed_steps.cpu_only()
  import jax  # pylint: disable=g-import-not-at-top

  features, extra = CASES[args.case]
  x = jax.random.normal(jax.random.key(0), INPUT_SHAPE)
  kernel = jax.random.normal(jax.random.key(1),
                             (3, 3, INPUT_SHAPE[-1], features))
  compiled = jax.jit(conv_relu, static_argnums=2).lower(
      x, kernel, extra).compile()
  harness.run_side(
      lambda: jax.block_until_ready(compiled(x, kernel)),
      warmup=args.warmup, iters=args.iters,
      setup_s=time.perf_counter() - _START,
      threads=len(os.sched_getaffinity(0)),
      info={'jax': jax.__version__,
            'ynnpack': 'ynn_fusion' in compiled.as_text()})


def sides(args, case: str) -> list[harness.Side]:
  common = [sys.executable, os.path.abspath(__file__), f'--case={case}',
            f'--iters={args.iters}', f'--warmup={args.warmup}']
  # XLA's own flags on both: the point is what the defaults do.
  return [harness.Side(f'{cpus} CPUs' if cpus == 'all' else 'one CPU',
                       common + [f'--cpus={cpus}'], {'XLA_FLAGS': None})
          for cpus in CPUS]


def main():
  args = _parse()
  if args.case:
    return side(args)
  cases = harness.choose(args.cases, CASES, 'cases')
  results = harness.measure_grid(lambda _, case: sides(args, case),
                                 ['default'], cases, rounds=args.rounds)
  n, h, w, c = INPUT_SHAPE
  print(f'\n3×3 conv + ReLU of [{n}, {h}, {w}, {c}], XLA defaults')
  print(f'{"case":12s} {"YNNPACK":>7s} {"all CPUs ms":>11s} '
        f'{"one CPU ms":>10s} {"one / all":>9s} {"per round":>10s} '
        f'{"GFLOP/s":>8s}')
  for r in results:
    every, one = r['sides']['all CPUs'], r['sides']['one CPU']
    q = r['ratios']['one CPU / all CPUs']
    features, _ = CASES[r['kind']]
    flops = 2 * n * h * w * 9 * c * features
    print(f'{r["kind"]:12s} {str(every["info"].get("ynnpack")):>7s} '
          f'{1e3 * every["median_s"]:11.1f} {1e3 * one["median_s"]:10.1f} '
          f'{q["value"]:9.2f} {min(q["per_round"]):4.2f}-'
          f'{max(q["per_round"]):4.2f} {flops / every["median_s"] / 1e9:8.1f}')
  print('one / all: the speed-up all CPUs give over one (~1.0: nothing).')
  harness.write_comparisons(args.json, args, results)


if __name__ == '__main__':
  harness.cli_main(main)
