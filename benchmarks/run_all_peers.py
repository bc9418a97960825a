"""Runs the three peer comparisons with the chosen settings, resumably.

  nohup bash run.sh python benchmarks/run_all_peers.py --out=/tmp/peers \
      --rounds=3 > /tmp/peers.log 2>&1 &
  bash run.sh python benchmarks/run_all_peers.py --out=/tmp/peers --summary

For each model (s3d, tsm, timesformer) one run of its script
(s3d_vs_torchvision.py, tsm_vs_torch.py, timesformer_vs_hf.py), each side
alone in fresh processes (benchmarks/harness.py), with:

- vidjax on the measured best XLA:CPU flags (`--settings=ynn`,
  cpu_settings.BEST_XLA_FLAGS);
- PyTorch as its CPU performance guide recommends (the --torch-* flags,
  passed on; default channels-last, TCMalloc or jemalloc, pinned threads:
  cpu_settings.py);
- inference and training (`--kinds=infer,train`), --rounds rounds.

Each model writes OUT/<model>.json (the script's --json) and its output to
OUT/<model>.log. The JSON appears only once its run has finished (written
under another name, then renamed), and a model whose JSON exists is
skipped: rerun the same command after an interruption and it resumes at
the first model not done. A model that fails is reported and the next one
runs; the exit status is 1 if any failed. `--summary` prints the figures of
the JSONs in OUT as the rows of benchmarks/README.md's tables.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import json
import os
import subprocess
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from benchmarks import cpu_settings  # pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position

# Model: (script, the peer side's name in its results, what it compares).
MODELS = {
    's3d': ('s3d_vs_torchvision.py', 'torch', 'S3D, 2×16×224²'),
    'tsm': ('tsm_vs_torch.py', 'torch', 'TSM-R50, 2×8×224²'),
    'timesformer': ('timesformer_vs_hf.py', 'hf', 'TimeSformer-B, 1×8×224²'),
}
SETTING = 'ynn'
KINDS = ('infer', 'train')


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', required=True,
                 help='directory for <model>.json and <model>.log')
  p.add_argument('--models', default=','.join(MODELS),
                 help='comma-separated, in order, of: ' + ', '.join(MODELS))
  p.add_argument('--rounds', type=int, default=3,
                 help='fresh processes per side and kind')
  p.add_argument('--iters', type=int, default=None,
                 help="timed steps per side and round (default: each "
                 "script's own)")
  p.add_argument('--warmup', type=int, default=None,
                 help="untimed steps first (default: each script's own)")
  cpu_settings.add_torch_flags(p)
  p.add_argument('--summary', action='store_true',
                 help='only print the tables of the JSONs in --out')
  args = p.parse_args(argv)
  for name in ('rounds', 'iters'):
    value = getattr(args, name)
    if value is not None and value < 1:
      raise harness.VidjaxError(f'--{name} must be >= 1, not {value}')
  return args


def command(model: str, args, json_path: str) -> list[str]:
  """The command line that runs `model`'s comparison into `json_path`."""
  script = os.path.join(REPO, 'benchmarks', MODELS[model][0])
  argv = [sys.executable, script, f'--settings={SETTING}',
          f'--kinds={",".join(KINDS)}', f'--rounds={args.rounds}',
          f'--torch-layout={args.torch_layout}',
          f'--torch-allocator={args.torch_allocator}',
          f'--torch-threads={args.torch_threads}', f'--json={json_path}']
  for name in ('iters', 'warmup'):
    if getattr(args, name) is not None:
      argv.append(f'--{name}={getattr(args, name)}')
  return argv


def run_all(args, runner: Callable[..., Any] = subprocess.run,
            out=None) -> list[str]:
  """Runs every model of --models not done yet; the names of those that
  failed."""
  out = out or sys.stdout
  models = harness.choose(args.models, MODELS, 'models')
  os.makedirs(args.out, exist_ok=True)
  failed = []
  for model in models:
    done = os.path.join(args.out, f'{model}.json')
    if os.path.exists(done):
      print(f'{model}: done already ({done}), skipped', file=out, flush=True)
      continue
    partial = done + '.partial'
    log = os.path.join(args.out, f'{model}.log')
    argv = command(model, args, partial)
    print(f'{model}: {" ".join(argv)}\n  output: {log}', file=out, flush=True)
    start = time.perf_counter()
    with open(log, 'w', encoding='utf-8') as f:
      proc = runner(argv, stdout=f, stderr=subprocess.STDOUT, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode == 0 and os.path.exists(partial):
      os.replace(partial, done)
      print(f'{model}: done in {elapsed / 60:.1f} min: {done}', file=out,
            flush=True)
    else:
      failed.append(model)
      print(f'{model}: FAILED (exit {proc.returncode}) after '
            f'{elapsed / 60:.1f} min; see {log}', file=out, flush=True)
  return failed


def rows(model: str, result: dict[str, Any]) -> list[str]:
  """Markdown rows of one model's JSON: kind, vidjax ms, peer ms, peer /
  vidjax and its per-round range, as benchmarks/README.md's tables."""
  peer = MODELS[model][1]
  lines = []
  for c in result['comparisons']:
    v, t = c['sides']['vidjax'], c['sides'][peer]
    q = c['ratios'][f'{peer} / vidjax']
    lines.append(
        f'| {model} | {c["kind"]} | {1e3 * v["median_s"]:.1f} | '
        f'{1e3 * t["median_s"]:.1f} | {q["value"]:.2f} | '
        f'{min(q["per_round"]):.2f}–{max(q["per_round"]):.2f} | '
        f'{c["rounds"]} | {c["machine"]["matmul_gflops"] or 0:.0f} |')
  return lines


def summary(out_dir: str, out=None):
  out = out or sys.stdout
  print('| model | kind | vidjax ms | peer ms | peer / vidjax | per round | '
        'rounds | matmul GFLOP/s |\n|---|---|---|---|---|---|---|---|',
        file=out)
  settings = []
  for model in MODELS:
    path = os.path.join(out_dir, f'{model}.json')
    if not os.path.exists(path):
      print(f'| {model} | (not run yet) | | | | | | |', file=out)
      continue
    with open(path, encoding='utf-8') as f:
      result = json.load(f)
    for line in rows(model, result):
      print(line, file=out)
    settings += [f'{model}: {line}'
                 for line in harness.settings_lines(result['comparisons'])]
  print('peer / vidjax > 1: vidjax is faster. As each side reported:',
        file=out)
  for line in settings:
    print(f'  {line}', file=out)


def main():
  args = _parse()
  if args.summary:
    return summary(args.out)
  torch = cpu_settings.torch_settings_from(args)
  print(f'vidjax: XLA_FLAGS={cpu_settings.BEST_XLA_FLAGS}\n'
        f'torch: {torch.line()}', flush=True)
  failed = run_all(args)
  summary(args.out)
  if failed:
    raise harness.VidjaxError(f'failed: {", ".join(failed)}; their logs are '
                              f'in {args.out}; rerun to retry them')


if __name__ == '__main__':
  harness.cli_main(main)
