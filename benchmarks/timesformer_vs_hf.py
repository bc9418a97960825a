"""vidjax TimeSformer-Base against Hugging Face's on this CPU.

  bash run.sh python benchmarks/timesformer_vs_hf.py              # defaults
  bash run.sh python benchmarks/timesformer_vs_hf.py --kinds=train \
      --rounds=5 --json=/tmp/timesformer.json
  bash run.sh python benchmarks/timesformer_vs_hf.py --precision=bfloat16

Same network on both sides: TimeSformer-Base with divided space-time
attention, 8×224² clips, 400 classes, the same batch; vidjax's
`timesformer` against `transformers.TimesformerForVideoClassification` with
its default config (the same model), randomly initialised. 'infer' is an
eval forward, 'train' forward + backward + SGD (benchmarks/timed_steps.py).

`--precision`: float32 on both sides, or bfloat16 compute with float32
parameters, each framework's own way: vidjax's `dtype=bfloat16`, and
Hugging Face under `torch.autocast('cpu', dtype=torch.bfloat16)` (the
forward; the backward follows its dtypes), as HF's Trainer does with
`bf16=True`.

Hugging Face runs as PyTorch's CPU performance guide recommends
(cpu_settings.py): TCMalloc or jemalloc preloaded, one OpenMP thread per
physical core, pinned. A transformer has no memory-format choice: its
activations are [batch, tokens, channels] already, and HF reshapes the
clip to contiguous frames for its one conv, the patch embedding; so
--torch-layout changes nothing here. The vidjax side runs with 'ynn' by
default, the flags measured best for the conv nets; for TimeSformer
'default' measured faster on 2026-12-03 (benchmarks/README.md).

Measured with benchmarks/harness.py (each side alone in a fresh process,
rounds alternating). Printed besides the harness's report: the achieved
FLOP/s of each side, 2 × the forward MACs (196.05 G per clip, fvcore's
count) per clip for inference and 3 × that for training, against the
matmul rate the harness measured in the same run (of bf16 operands
accumulating in float32 under --precision=bfloat16).
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
XLA_SETTINGS = {
    'default': '',
    'ynn': cpu_settings.BEST_XLA_FLAGS,
}
DEFAULT_SETTINGS = ('ynn',)
# What --torch-layout means for a transformer (see the docstring).
NO_LAYOUT = 'none: a transformer has no layout choice'
KINDS = ('infer', 'train')
PRECISIONS = ('float32', 'bfloat16')
# One forward pass per 8×224² clip, fvcore's count (REFERENCES.md).
FORWARD_GMACS = 196.05
# Training: forward plus a backward of twice its cost.
TRAIN_FACTOR = 3


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=1, help='clips per step')
  harness.add_step_flags(p, iters=3, warmup=1, rounds=2)
  p.add_argument('--settings', default=','.join(DEFAULT_SETTINGS),
                 help='comma-separated XLA flag settings, of: '
                 + ', '.join(XLA_SETTINGS))
  p.add_argument('--kinds', default=','.join(KINDS),
                 help='comma-separated, of: ' + ', '.join(KINDS))
  p.add_argument('--precision', default='float32', choices=PRECISIONS,
                 help='compute dtype of both sides (parameters float32)')
  cpu_settings.add_torch_flags(p)
  p.add_argument('--side', choices=('vidjax', 'hf'), help=argparse.SUPPRESS)
  p.add_argument('--kind', choices=KINDS, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for name in ('batch', 'iters', 'rounds'):
    if getattr(args, name) < 1:
      raise VidjaxError(f'--{name} must be >= 1, not {getattr(args, name)}')
  return args


def vidjax_side(args):
  timed_steps.cpu_only()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top

  dtype = {'bfloat16': jnp.bfloat16}.get(args.precision)
  model = create_model('timesformer', num_classes=NUM_CLASSES, dtype=dtype)
  video = jax.random.normal(jax.random.key(0), (args.batch, 8, 224, 224, 3))
  labels = jnp.arange(args.batch) % NUM_CLASSES
  variables = jax.block_until_ready(jax.jit(model.init)(jax.random.key(1),
                                                        video))
  step = (timed_steps.vidjax_infer(model, variables, video)
          if args.kind == 'infer' else
          timed_steps.vidjax_train(model, variables, video, labels))
  threads = len(os.sched_getaffinity(0))
  harness.run_side(step, warmup=args.warmup, iters=args.iters,
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(threads),
                   info={'jax': jax.__version__, 'precision': args.precision})


class _Logits:
  """HF's model output → float32 logits, so the shared torch steps apply;
  the forward under bf16 autocast if `autocast`."""

  def __init__(self, model, autocast: bool = False):
    self.model = model
    self.autocast = autocast

  def __call__(self, video):
    import torch  # pylint: disable=g-import-not-at-top
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.autocast):
      return self.model(pixel_values=video).logits.float()

  def __getattr__(self, name):
    return getattr(self.model, name)


def hf_side(args):
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  config = transformers.TimesformerConfig(num_labels=NUM_CLASSES)
  model = transformers.TimesformerForVideoClassification(config)
  video = torch.randn(args.batch, 8, 3, 224, 224)
  labels = torch.arange(args.batch) % NUM_CLASSES
  wrapped = _Logits(model, autocast=args.precision == 'bfloat16')
  step = (timed_steps.torch_infer(wrapped, video) if args.kind == 'infer'
          else timed_steps.torch_train(wrapped, video, labels))
  threads = torch.get_num_threads()
  harness.run_side(step, warmup=args.warmup, iters=args.iters,
                   setup_s=time.perf_counter() - _START, threads=threads,
                   settings=cpu_settings.side_report(
                       threads, memory_format=NO_LAYOUT),
                   info={'torch': torch.__version__,
                         'transformers': transformers.__version__,
                         'precision': args.precision,
                         'attention': str(getattr(
                             config, '_attn_implementation', None))})


def sides(args, setting: str, kind: str) -> list[harness.Side]:
  common = [sys.executable, os.path.abspath(__file__), f'--kind={kind}',
            f'--batch={args.batch}', f'--iters={args.iters}',
            f'--warmup={args.warmup}', f'--precision={args.precision}']
  torch_env = cpu_settings.torch_settings_from(args).env()
  return [
      harness.Side('vidjax', common + ['--side=vidjax'],
                   {'XLA_FLAGS': XLA_SETTINGS[setting]}),
      harness.Side('hf', common + cpu_settings.torch_side_flags(args)
                   + ['--side=hf'], {**torch_env, 'XLA_FLAGS': None}),
  ]


def achieved_gflops(kind: str, batch: int, step_s: float) -> float:
  factor = TRAIN_FACTOR if kind == 'train' else 1
  return 2 * FORWARD_GMACS * factor * batch / step_s


def main():
  args = _parse()
  if args.side == 'vidjax':
    return vidjax_side(args)
  if args.side == 'hf':
    return hf_side(args)
  settings = harness.choose(args.settings, XLA_SETTINGS, 'settings')
  kinds = harness.choose(args.kinds, KINDS, 'kinds')
  print(f'TimeSformer-Base (divided), {args.precision}, {args.batch} '
        f'clip(s) of 8×224²; per '
        f'side and round a fresh process: {args.warmup} warm-up then '
        f'{args.iters} timed step(s)', flush=True)
  print(f'hf: {cpu_settings.torch_settings_from(args).line(NO_LAYOUT)}',
        flush=True)
  results = harness.measure_grid(
      lambda setting, kind: sides(args, setting, kind), settings, kinds,
      rounds=args.rounds, matmul_dtype=args.precision)
  print(f'\n{"setting":8s} {"kind":6s} {"vidjax ms":>10s} {"hf ms":>10s} '
        f'{"hf/vidjax":>10s} {"per round":>10s} {"vidjax GFLOP/s":>15s} '
        f'{"hf GFLOP/s":>11s} {"matmul":>7s} {"vidjax/matmul":>14s}')
  for r in results:
    v, h = r['sides']['vidjax'], r['sides']['hf']
    q = r['ratios']['hf / vidjax']
    matmul = r['machine']['matmul_gflops']
    gv = achieved_gflops(r['kind'], args.batch, v['median_s'])
    gh = achieved_gflops(r['kind'], args.batch, h['median_s'])
    print(f'{r["setting"]:8s} {r["kind"]:6s} {1e3 * v["median_s"]:10.1f} '
          f'{1e3 * h["median_s"]:10.1f} {q["value"]:10.2f} '
          f'{min(q["per_round"]):4.2f}-{max(q["per_round"]):4.2f} '
          f'{gv:15.1f} {gh:11.1f} {matmul:7.1f} {100 * gv / matmul:13.1f}%')
  print('hf/vidjax > 1: vidjax is faster. GFLOP/s: 2 × 196.05 G MACs per '
        'clip (× 3 for training) / median step.')
  for line in harness.settings_lines(results):
    print(line)
  harness.write_comparisons(args.json, args, results)


if __name__ == '__main__':
  harness.cli_main(main)
