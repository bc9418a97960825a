"""How TimeSformer's cost grows with the clip length, per attention scheme.

  bash run.sh python benchmarks/timesformer_scaling.py            # ~1 h
  bash run.sh python benchmarks/timesformer_scaling.py --frames=8,16 \
      --schemes=divided,joint --json=/tmp/scaling.json

For each scheme and frame count: forward MACs at 224² (fvcore's count,
`vidjax.tools.profile`) and the compiled training step's HBM per chip on a
TPU v5e (`vidjax.tools.aot`, libtpu on this CPU: arguments + outputs -
aliased + temporaries + code; or, when it does not fit, the compiler's own
figure from its out-of-memory message). One clip per chip, bf16 compute
with float32 parameters, the Kinetics config's recipe otherwise. Each
compile runs in its own process (they are large); a compile that fails is
reported, not fatal. Joint attention's step grows with (T·S)² and divided
attention's with T·S·(T + S): the table shows the first bending up and the
second staying nearly linear.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax.errors import VidjaxError  # pylint: disable=g-import-not-at-top,wrong-import-position

SCHEMES = ('space', 'joint', 'divided', 'local_global', 'axial')
FRAMES = (8, 16, 32, 64, 96)
GIB = 1024 ** 3


def _parse(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--schemes', default=','.join(SCHEMES))
  p.add_argument('--frames', default=','.join(map(str, FRAMES)))
  p.add_argument('--topology', default='v5e:2x2')
  p.add_argument('--remat', default='none', choices=('none', 'block'))
  p.add_argument('--timeout', type=float, default=1800,
                 help='seconds per compile')
  p.add_argument('--json', default=None)
  args = p.parse_args(argv)
  args.schemes = harness.choose(args.schemes, SCHEMES, 'schemes')
  try:
    args.frames = [int(f) for f in args.frames.split(',') if f]
  except ValueError:
    raise VidjaxError(f'--frames wants integers, got {args.frames!r}') from None
  return args


def model_name(scheme: str) -> str:
  return 'timesformer' if scheme == 'divided' else f'timesformer_{scheme}'


def forward_gmacs(scheme: str, frames: int) -> float:
  from vidjax.tools import profile  # pylint: disable=g-import-not-at-top
  r = profile.profile(model_name(scheme), frames=frames, size=224,
                      num_classes=400, compile_forward=False)
  return r['macs'] / 1e9


def aot_argv(scheme: str, frames: int, topology: str, remat: str,
             chips: int, json_path: str) -> list[str]:
  return [sys.executable, '-m', 'vidjax.tools.aot',
          f'--config=configs/kinetics400_timesformer.py:scheme={scheme}',
          f'--config.data.num_frames={frames}', f'--topology={topology}',
          f'--batch_size={chips}', '--dtype=bfloat16', f'--remat={remat}',
          f'--json={json_path}']


def chips_of(topology: str) -> int:
  dims = topology.split(':')[1].split('x')
  n = 1
  for d in dims:
    n *= int(d)
  return n


def compile_memory(scheme, frames, args) -> dict:
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, 'aot.json')
    argv = aot_argv(scheme, frames, args.topology, args.remat,
                    chips_of(args.topology), path)
    start = time.perf_counter()
    try:
      proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True,
                            timeout=args.timeout,
                            env=dict(os.environ, PYTHONPATH=REPO))
    except subprocess.TimeoutExpired:
      return {'error': f'compile took over {args.timeout:.0f} s'}
    seconds = time.perf_counter() - start
    if not os.path.exists(path):
      tail = (proc.stderr.strip().splitlines() or ['no output'])[-1]
      return {'error': tail[:200], 'seconds': seconds}
    with open(path) as f:
      report = json.load(f)[0]
  total = report['total'] if report['fits'] else report.get('oom_used')
  return {'fits': report['fits'], 'hbm_gib': (total or 0) / GIB,
          'capacity_gib': report['hbm_capacity'] / GIB, 'seconds': seconds}


def main():
  args = _parse()
  rows = []
  for scheme in args.schemes:
    for frames in args.frames:
      gmacs = forward_gmacs(scheme, frames)
      memory = compile_memory(scheme, frames, args)
      rows.append({'scheme': scheme, 'frames': frames, 'gmacs': gmacs,
                   **memory})
      what = (memory['error'] if 'error' in memory else
              f'{memory["hbm_gib"]:.2f} GiB'
              f'{"" if memory["fits"] else " (does not fit)"}')
      print(f'{scheme:13s} {frames:3d} frames: {gmacs:9.2f} G MACs, {what}'
            f' [{memory.get("seconds", 0):.0f} s]', flush=True)
  print(f'\n| scheme | ' + ' | '.join(f'{f} frames' for f in args.frames)
        + ' |')
  print('|---|' + '---|' * len(args.frames))
  for scheme in args.schemes:
    cells = []
    for r in rows:
      if r['scheme'] != scheme:
        continue
      mem = ('—' if 'error' in r else
             f'{r["hbm_gib"]:.1f} GiB{"" if r["fits"] else "*"}')
      cells.append(f'{r["gmacs"]:.0f} G / {mem}')
    print(f'| {scheme} | ' + ' | '.join(cells) + ' |')
  print(f'\nG MACs forward per clip at 224² / training HBM per {args.topology}'
        f' chip, 1 clip per chip, bf16, remat {args.remat}; * does not fit '
        '(the compiler\'s figure).')
  if args.json:
    harness.write_json(args.json, {'args': vars(args), 'rows': rows})


if __name__ == '__main__':
  harness.cli_main(main)
