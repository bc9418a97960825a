"""One harness for side-by-side benchmarks: each side alone in its own process.

A comparison is two (or more) *sides*. A side is a name, a command line and
the environment overrides it runs under (XLA_FLAGS, OMP_NUM_THREADS,
GLIBC_TUNABLES, ...). Every measurement round launches every side's command
as a fresh subprocess, in the order A, B, A, B, ...: each framework is
measured the way a user runs it, alone in its process, and load that drifts
over the run hits both sides alike.

Why processes: timing two frameworks in one process, step for step, lets
them disturb each other (their thread pools and allocators share one
address space and one set of cores). Our S3D benchmark did that and PyTorch
ran up to ~1.9x slower next to JAX than alone, so vidjax's lead came out at
1.96x inference / 1.35x training where, on that machine, each side alone
gave 1.06-1.20x / 1.00-1.05x.

The comparison script builds the sides and calls `measure`:

  sides = [harness.Side('vidjax', [sys.executable, __file__, '--side=vidjax'],
                        {'XLA_FLAGS': '...'}),
           harness.Side('torch', [sys.executable, __file__, '--side=torch'])]
  result = harness.measure(sides, rounds=3, json_path='out.json')

and, re-invoked as a side, does its own set-up and warm-up (compilation)
through `run_side`, which times the steps and prints them as one JSON line,
the last line of the side's stdout:

  harness.run_side(step, warmup=2, iters=5, setup_s=..., threads=...,
                   settings=...)

  {"setup_s": 3.1, "warmup_s": [41.0, 0.6], "step_s": [0.61, ...],
   "threads": 2, "xla_flags": "...", "settings": {...}, "info": {...}}

`settings` is what the side ran with as it sees it (memory format,
allocator, threads: benchmarks/cpu_settings.py); the report prints it under
the side's line and the JSON keeps it.

`measure` keeps the warm-up apart from the step statistics and reports per
side the median step (over every timed step of every round, and per round),
the spread of the per-round medians, the set-up and warm-up times, thread
count and environment; the ratio of the medians between sides; and this
machine's float32 matmul rate, measured in the same run in a process of its
own, so that figures from different machines can be put side by side.

A side that fails, or prints no result line, raises `SideError` (a
`VidjaxError`); `cli_main` turns that into `vidjax: error: ...` and exit 1.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, TextIO

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  # Side scripts run as `python benchmarks/x.py`, which puts only
  # benchmarks/ on the path.
  sys.path.insert(0, REPO)

from vidjax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax.errors import VidjaxError  # pylint: disable=g-import-not-at-top,wrong-import-position

MATMUL_SIZE = 2048
MATMUL_REPEATS = 5
# Lines of a failed side's stderr that go into the error: a Python traceback
# ends with the exception, a C++ abort with its check message.
_STDERR_TAIL_LINES = 6
_STDERR_TAIL_CHARS = 1500


class SideError(VidjaxError):
  """A side's process failed, timed out or printed no result line."""


@dataclasses.dataclass(frozen=True)
class Side:
  """One contestant: `argv` run with `env` over this process's environment.

  An `env` value of None removes that variable from the side's environment
  (e.g. XLA_FLAGS for a side that is not JAX, so none is reported).
  """
  name: str
  argv: Sequence[str]
  env: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
  timeout_s: float | None = None


# ---------------------------------------------------------------- arithmetic


def median(values: Sequence[float]) -> float:
  if not values:
    raise ValueError('median of no values')
  return float(statistics.median(values))


def spread(round_medians: Sequence[float]) -> dict[str, float]:
  """Min and max of the per-round medians, and (max - min) / their median."""
  lo, hi = min(round_medians), max(round_medians)
  return {'min': float(lo), 'max': float(hi),
          'rel': float((hi - lo) / median(round_medians))}


def ratio(numerator: float, denominator: float) -> float:
  """numerator / denominator, of step times: > 1 means the denominator's
  side is faster."""
  if denominator <= 0:
    raise ValueError(f'ratio with a non-positive denominator {denominator}')
  return float(numerator / denominator)


def eta_s(elapsed_s: float, done: int, total: int) -> float:
  """Seconds left for `total - done` rounds at the pace of the `done` ones."""
  if done <= 0:
    raise ValueError('no round done yet')
  return elapsed_s / done * (total - done)


def summarize(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """One side's statistics from its per-round result lines."""
  round_medians = [median(r['step_s']) for r in records]
  steps = [s for r in records for s in r['step_s']]
  warmups = [list(r.get('warmup_s') or []) for r in records]
  setups = [r['setup_s'] for r in records if r.get('setup_s') is not None]
  return {
      'median_s': median(steps),
      'steps': len(steps),
      'round_medians_s': round_medians,
      'spread_s': spread(round_medians),
      'setup_s': setups,
      'warmup_s': warmups,
      # Medians over the rounds: the first warm-up step holds the compile.
      'setup_median_s': median(setups) if setups else None,
      'warmup_total_median_s': (median([sum(w) for w in warmups])
                                if any(warmups) else None),
      'first_warmup_median_s': (median([w[0] for w in warmups if w])
                                if any(warmups) else None),
      'threads': records[0].get('threads'),
      'xla_flags': records[0].get('xla_flags'),
      'settings': records[0].get('settings', {}),
      'info': records[0].get('info', {}),
  }


def compare(summaries: Mapping[str, Mapping[str, Any]],
            order: Sequence[str]) -> dict[str, dict[str, Any]]:
  """Every side against the first: 'B / A' = B's median step / A's."""
  first = order[0]
  base = summaries[first]
  out = {}
  for name in order[1:]:
    other = summaries[name]
    out[f'{name} / {first}'] = {
        'value': ratio(other['median_s'], base['median_s']),
        # Round r of each side ran back to back, under much the same load.
        'per_round': [ratio(o, b) for o, b in zip(other['round_medians_s'],
                                                   base['round_medians_s'])],
        'meaning': f'> 1: {first} is faster',
    }
  return out


def child_env(overrides: Mapping[str, str | None],
              base: Mapping[str, str] | None = None) -> dict[str, str]:
  """`base` (default: this process's environment) with `overrides` applied;
  a None value removes the variable."""
  env = dict(os.environ if base is None else base)
  for key, value in overrides.items():
    if value is None:
      env.pop(key, None)
    else:
      env[key] = value
  return env


# ------------------------------------------------------------ the side's end


def run_side(step: Callable[[], Any], *, warmup: int, iters: int,
             setup_s: float | None = None, threads: int | None = None,
             info: Mapping[str, Any] | None = None,
             settings: Mapping[str, Any] | None = None,
             out: TextIO | None = None) -> dict[str, Any]:
  """In a side's process: time `step` and print the result line.

  `step` must return only when its work is done (for JAX:
  `jax.block_until_ready`). The `warmup` calls come first and are timed
  apart (compilation lands in the first); then `iters` timed calls.
  `setup_s` is the side's own set-up (imports, model, data), `threads`
  its compute threads and `settings` what it runs with (memory format,
  allocator, ...), all as the side knows them.
  """
  if iters < 1:
    raise ValueError(f'iters must be >= 1, not {iters}')
  warmup_s = [_time(step) for _ in range(warmup)]
  step_s = [_time(step) for _ in range(iters)]
  record = {'setup_s': setup_s, 'warmup_s': warmup_s, 'step_s': step_s,
            'threads': threads, 'xla_flags': os.environ.get('XLA_FLAGS'),
            'settings': dict(settings or {}), 'info': dict(info or {})}
  print(json.dumps(record), file=out or sys.stdout, flush=True)
  return record


def _time(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


# ---------------------------------------------------------- the runner's end


def _tail(text: str) -> str:
  lines = [line for line in text.strip().splitlines() if line.strip()]
  tail = ' | '.join(lines[-_STDERR_TAIL_LINES:])
  return tail[-_STDERR_TAIL_CHARS:] or '(nothing on stderr)'


def parse_result(name: str, stdout: str) -> dict[str, Any]:
  """The side's result: the last stdout line that is a JSON object with
  'step_s' (libraries may print after it at exit)."""
  for line in reversed(stdout.strip().splitlines()):
    line = line.strip()
    if not line.startswith('{'):
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if isinstance(record, dict) and isinstance(record.get('step_s'), list):
      if not record['step_s']:
        raise SideError(f'side {name!r} timed no steps')
      return record
  last = stdout.strip().splitlines()[-1:] or ['(nothing)']
  raise SideError(f'side {name!r} printed no JSON result line with "step_s" '
                  f'(harness.run_side prints one); its last stdout line: '
                  f'{last[0][:300]}')


def run_once(side: Side) -> dict[str, Any]:
  """Runs `side` once in a fresh process; its result line."""
  try:
    proc = subprocess.run(list(side.argv), env=child_env(side.env),
                          capture_output=True, text=True, check=False,
                          timeout=side.timeout_s)
  except FileNotFoundError as e:
    raise SideError(f'side {side.name!r} could not start: {e}') from e
  except subprocess.TimeoutExpired as e:
    stderr = e.stderr.decode(errors='replace') if isinstance(
        e.stderr, bytes) else (e.stderr or '')
    raise SideError(f'side {side.name!r} timed out after {side.timeout_s} s; '
                    f'stderr: {_tail(stderr)}') from e
  if proc.returncode:
    how = (f'was killed by signal {-proc.returncode}' if proc.returncode < 0
           else f'exited with {proc.returncode}')
    raise SideError(f'side {side.name!r} {how}; stderr: {_tail(proc.stderr)}')
  return parse_result(side.name, proc.stdout)


_MATMUL_PROBE = r'''
import json, sys, time
import jax
import jax.numpy as jnp
n, repeats, dtype = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
a = jax.random.normal(jax.random.key(0), (n, n), dtype)
b = jax.random.normal(jax.random.key(1), (n, n), dtype)
# bf16 operands accumulate in float32, the product a mixed-precision
# Dense asks for (vidjax/kernels/matmul.py).
dot = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
dot(a, b).block_until_ready()
times = []
for _ in range(repeats):
  start = time.perf_counter()
  dot(a, b).block_until_ready()
  times.append(time.perf_counter() - start)
print(json.dumps({'step_s': times}))
'''


def matmul_gflops(size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS,
                  env: Mapping[str, str | None] | None = None,
                  dtype: str = 'float32') -> float:
  """This machine's matmul rate, GFLOP/s: a `size`² jnp.dot of `dtype`
  operands (accumulating in float32) under jax.jit in a process of its
  own, median of `repeats` after one compile."""
  # CPU unless the caller says otherwise: the benchmarks here are CPU ones,
  # and jax[tpu] installed without a TPU would load libtpu (vidjax/platform.py).
  overrides = {'JAX_PLATFORMS': os.environ.get('JAX_PLATFORMS', 'cpu'),
               **(env or {})}
  probe = Side('matmul-rate probe',
               [sys.executable, '-c', _MATMUL_PROBE, str(size), str(repeats),
                dtype],
               overrides)
  record = run_once(probe)
  return 2 * size ** 3 / median(record['step_s']) / 1e9


def machine() -> dict[str, Any]:
  cpu = None
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          cpu = line.split(':', 1)[1].strip()
          break
  except OSError:
    pass
  usable = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
            else os.cpu_count())
  return {'cpus': os.cpu_count(), 'usable_cpus': usable, 'cpu': cpu}


def measure(sides: Sequence[Side], *, rounds: int = 3,
            matmul: Callable[[], float] | None = matmul_gflops,
            matmul_dtype: str = 'float32',
            json_path: str | None = None, label: str | None = None,
            out: TextIO | None = None) -> dict[str, Any]:
  """Runs `rounds` rounds of every side, A, B, A, B, ...; prints progress and
  the report to `out` (default stdout); returns the result (and writes it as
  JSON to `json_path`).

  `matmul` measures the machine's matmul rate once, before the rounds
  (None: skip); tests pass a stub. `matmul_dtype` names its operands'
  dtype in the report.

  Raises:
    SideError: a side (or the matmul probe) failed or printed no result.
  """
  out = out or sys.stdout
  names = [s.name for s in sides]
  if not sides or len(set(names)) != len(names):
    raise ValueError(f'want sides with distinct names, got {names}')
  if rounds < 1:
    raise ValueError(f'rounds must be >= 1, not {rounds}')
  title = f'{label}: ' if label else ''
  print(f'{title}{rounds} round(s) of {", ".join(names)}, each side a fresh '
        'process', file=out, flush=True)
  start = time.perf_counter()
  gflops = matmul() if matmul is not None else None
  records = {name: [] for name in names}
  order = []
  for r in range(1, rounds + 1):
    for side in sides:
      order.append(side.name)
      records[side.name].append(run_once(side))
    elapsed = time.perf_counter() - start
    steps = ', '.join(f'{n} {_ms(median(records[n][-1]["step_s"]))}'
                      for n in names)
    eta = (f', ~{_duration(eta_s(elapsed, r, rounds))} to go'
           if r < rounds else '')
    print(f'  round {r}/{rounds}: {steps}; {_duration(elapsed)} elapsed{eta}',
          file=out, flush=True)
  summaries = {n: summarize(records[n]) for n in names}
  result = {
      'label': label,
      'rounds': rounds,
      'order': order,
      'machine': {**machine(), 'matmul_gflops': gflops,
                  'matmul_dtype': matmul_dtype},
      'sides': {s.name: {'argv': list(s.argv), 'env': dict(s.env),
                         **summaries[s.name], 'runs': records[s.name]}
                for s in sides},
      'ratios': compare(summaries, names) if len(names) > 1 else {},
      'elapsed_s': time.perf_counter() - start,
  }
  report(result, out)
  if json_path:
    write_json(json_path, result)
  return result


def report(result: Mapping[str, Any], out: TextIO | None = None):
  """The human-readable lines of a `measure` result."""
  out = out or sys.stdout
  width = max(len(n) for n in result['sides'])
  for name, s in result['sides'].items():
    lo, hi = s['spread_s']['min'], s['spread_s']['max']
    rounds = ' / '.join(f'{1e3 * m:.1f}' for m in s['round_medians_s'])
    print(f'  {name:{width}s}  median {_ms(s["median_s"])} over {s["steps"]} '
          f'steps; per round {rounds} ms (spread {1e3 * lo:.1f}-'
          f'{1e3 * hi:.1f}, {100 * s["spread_s"]["rel"]:.1f}%)', file=out)
    parts, times = [], []
    if s['setup_median_s'] is not None:
      times.append(f'set-up {_duration(s["setup_median_s"])}')
    if s['warmup_total_median_s'] is not None:
      times.append(f'warm-up {_duration(s["warmup_total_median_s"])}, '
                   f'its first step {_duration(s["first_warmup_median_s"])}')
    if times:
      parts.append(', '.join(times) + ' (medians over rounds)')
    parts.append(f'threads {s["threads"] if s["threads"] is not None else "?"}')
    flags = s['xla_flags']
    parts.append('XLA_FLAGS ' + (repr(flags) if flags is not None else 'unset'))
    overrides = {k: v for k, v in s['env'].items() if k != 'XLA_FLAGS'}
    if overrides:
      parts.append('env ' + ' '.join(f'{k}={"(unset)" if v is None else v}'
                                     for k, v in overrides.items()))
    print(f'  {"":{width}s}  {"; ".join(parts)}', file=out)
    if s.get('settings'):
      print(f'  {"":{width}s}  ran with: {describe_settings(s["settings"])}',
            file=out)
  for key, r in result['ratios'].items():
    per_round = r['per_round']
    print(f'  {key} = {r["value"]:.2f} (per round {min(per_round):.2f}-'
          f'{max(per_round):.2f}; {r["meaning"]})', file=out)
  m = result['machine']
  rate = (f'{m["matmul_gflops"]:.1f} GFLOP/s '
          f'{m.get("matmul_dtype", "float32")} matmul '
          f'({MATMUL_SIZE}² jnp.dot, jit, own process, median of '
          f'{MATMUL_REPEATS})' if m['matmul_gflops'] is not None
          else 'matmul rate not measured')
  print(f'  machine: {m["usable_cpus"]} of {m["cpus"]} CPUs usable'
        f'{", " + m["cpu"] if m["cpu"] else ""}; {rate}', file=out, flush=True)


def describe_settings(settings: Mapping[str, Any]) -> str:
  """A side's settings as 'key value' pairs, nested ones as key=value."""
  parts = []
  for key, value in settings.items():
    if isinstance(value, Mapping):
      value = ' '.join(f'{k}={v}' for k, v in value.items())
    parts.append(f'{key.replace("_", " ")} {value}')
  return '; '.join(parts)


def settings_lines(results: Sequence[Mapping[str, Any]]) -> list[str]:
  """'<side> ran with: ...' per side of `measure` results, once per distinct
  setting (XLA flags included), for under a benchmark's table."""
  seen: dict[str, list[str]] = {}
  for result in results:
    for name, side in result['sides'].items():
      flags = side.get('xla_flags')
      text = '; '.join(filter(None, [
          f'XLA_FLAGS {flags!r}' if flags else None,
          describe_settings(side.get('settings') or {})]))
      if text and text not in seen.setdefault(name, []):
        seen[name].append(text)
  return [f'{name} ran with: {text}' for name, texts in seen.items()
          for text in texts]


def add_step_flags(parser, *, iters: int = 5, warmup: int = 2,
                   rounds: int = 3):
  """The flags every step benchmark has: --iters --warmup --rounds --json."""
  parser.add_argument('--iters', type=int, default=iters,
                      help='timed steps per side per round')
  parser.add_argument('--warmup', type=int, default=warmup,
                      help='untimed steps per side per round (vidjax '
                      'compiles in the first)')
  parser.add_argument('--rounds', type=int, default=rounds,
                      help='fresh processes per side, alternating the sides')
  parser.add_argument('--json', default=None, help='also write every result '
                      '(all steps, all rounds) here')


def choose(text: str, known: Sequence[str], what: str) -> list[str]:
  """The comma-separated names of `text`, each one of `known`."""
  names = [n for n in text.split(',') if n]
  unknown = sorted(set(names) - set(known))
  if unknown or not names:
    raise VidjaxError(f'unknown --{what} {", ".join(unknown) or "(none)"}; '
                      f'known: {", ".join(known)}')
  return names


def measure_grid(sides: Callable[[str, str], Sequence[Side]],
                 settings: Sequence[str], kinds: Sequence[str], *,
                 rounds: int, matmul_dtype: str = 'float32'
                 ) -> list[dict[str, Any]]:
  """`measure` for every (setting, kind): `sides(setting, kind)` builds them.

  Returns one result per pair, in order, with 'setting' and 'kind' added.
  The matmul rate is of `matmul_dtype` operands.
  """
  matmul = functools.partial(matmul_gflops, dtype=matmul_dtype)
  results = []
  for setting in settings:
    for kind in kinds:
      result = measure(sides(setting, kind), rounds=rounds, matmul=matmul,
                       matmul_dtype=matmul_dtype, label=f'{setting} {kind}')
      results.append({'setting': setting, 'kind': kind, **result})
  return results


def write_comparisons(path: str | None, args, results: Sequence[Any]):
  """The --json output of a step benchmark: its flags and every result."""
  if not path:
    return
  write_json(path, {
      'args': {k: v for k, v in vars(args).items()
               if k not in ('side', 'kind')},
      'comparisons': list(results)})
  print(f'results: {path}')


def write_json(path: str, result: Any):
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
    f.write('\n')


def cli_main(fn: Callable[[], Any]):
  """Runs a benchmark's `fn()`; a VidjaxError (a failed side among them)
  becomes one line, `vidjax: error: ...`, and exit 1."""
  try:
    fn()
  except VidjaxError as e:
    cli.exit_with_error(str(e))


def _ms(seconds: float) -> str:
  return f'{1e3 * seconds:.1f} ms'


def _duration(seconds: float) -> str:
  if seconds < 10:
    return f'{seconds:.2f} s'
  if seconds < 120:
    return f'{seconds:.0f} s'
  return f'{int(seconds // 60)} min {int(seconds % 60):02d} s'
