"""What one compile says per chip, its roofline estimate, and the text table.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

from vidjax.parallel import mesh as mesh_lib
from vidjax.tools.aot.collectives import COLLECTIVES
from vidjax.tools.aot.topology import CHIPS
from vidjax.tools.aot.topology import Chip
from vidjax.tools.aot.topology import GiB


@dataclasses.dataclass
class Report:
  """One compile of the train step for one topology: per-chip figures."""
  topology: str
  chip: str
  num_chips: int
  mesh: dict[str, int]
  global_batch: int
  per_chip_batch: int            # global_batch / the mesh's data axis.
  clip_shape: tuple[int, ...]
  num_classes: int
  lowering: str
  remat: str
  dtype: str
  hbm_capacity: int
  fits: bool
  # HBM per chip, from compiled.memory_analysis() (None when libtpu refused
  # to compile for lack of memory: then `oom` holds its message).
  arguments: int | None = None
  outputs: int | None = None
  temporaries: int | None = None
  generated_code: int | None = None
  aliased: int | None = None
  total: int | None = None       # args + outputs - aliased + temp + code.
  xla_peak: int | None = None    # memory_analysis().peak_memory_in_bytes.
  # XLA's cost_analysis() of the per-chip program.
  flops: float | None = None
  bytes_accessed: float | None = None
  transcendentals: float | None = None
  xla_optimal_seconds: float | None = None
  collectives: dict[str, dict[str, int]] = dataclasses.field(
      default_factory=dict)
  oom: str | None = None          # libtpu's out-of-memory message.
  oom_used: int | None = None     # What libtpu said it needs (for some
  # buffers: its message names them, e.g. the temporaries) and has, bytes.
  oom_limit: int | None = None
  compile_seconds: float = 0.0
  hlo: str | None = dataclasses.field(default=None, repr=False)  # keep_hlo.


def roofline(report: Report, chip: Chip | str) -> dict[str, Any]:
  """max(flops / peak flops, bytes / HBM bandwidth): a step-time estimate.

  Per chip (every chip runs the same partitioned program, so it is also the
  step's). Ignores collectives and the overlap of compute with memory.
  """
  chip = CHIPS[chip] if isinstance(chip, str) else chip
  if report.flops is None:
    return {}
  compute = report.flops / chip.peak_flops
  memory = report.bytes_accessed / chip.hbm_bandwidth
  seconds = max(compute, memory)
  return {'compute_seconds': compute, 'memory_seconds': memory,
          'seconds': seconds,
          'bound': 'compute' if compute >= memory else 'memory',
          'clips_per_second': report.global_batch / seconds if seconds else
                              float('inf')}


def _bytes(n: float | None) -> str:
  if n is None:
    return '-'
  for unit, scale in (('GiB', GiB), ('MiB', 2**20), ('KiB', 2**10)):
    if abs(n) >= scale:
      return f'{n / scale:.2f} {unit}'
  return f'{int(n)} B'


def _si(n: float | None, unit: str) -> str:
  if n is None:
    return '-'
  for prefix, scale in (('P', 1e15), ('T', 1e12), ('G', 1e9), ('M', 1e6),
                        ('k', 1e3)):
    if abs(n) >= scale:
      return f'{n / scale:.3g} {prefix}{unit}'
  return f'{n:.3g} {unit}'


def _seconds(s: float | None) -> str:
  if s is None:
    return '-'
  if s < 1e-3:
    return f'{s * 1e6:.0f} us'
  return f'{s * 1e3:.1f} ms' if s < 10 else f'{s:.1f} s'


def describe_batch(report: Report) -> str:
  data = report.mesh.get(mesh_lib.DATA_AXIS, 1)
  time_axis = report.mesh.get(mesh_lib.TIME_AXIS, 1)
  text = (f'batch {report.global_batch} global = {report.per_chip_batch} per '
          f'chip x {data} (data axis)')
  if time_axis > 1:
    text = (f'batch {report.global_batch} global = {report.per_chip_batch} '
            f'per data shard x {data} (data axis), each clip split along T '
            f'over {time_axis} chips (time axis)')
  return text


def format_report(reports: Sequence[Report],
                  columns: Sequence[str] | None = None) -> str:
  """The reports side by side (one column each), as aligned text."""
  first = reports[0]
  chip = CHIPS[first.chip]
  mesh = ' x '.join(f'{k} {v}' for k, v in first.mesh.items())
  lines = [
      f'TPU {first.topology}: {first.num_chips} chips ({chip.device_kind}), '
      f'mesh {mesh}. Per chip: {chip.hbm_bytes / GiB:.0f} GiB HBM, '
      f'{chip.peak_flops / 1e12:.0f} TFLOP/s bf16, '
      f'{chip.hbm_bandwidth / 1e9:.0f} GB/s (Cloud TPU docs).',
      f'clip {"x".join(map(str, first.clip_shape))}, {first.num_classes} '
      f'classes, {describe_batch(first)}.',
  ]
  columns = list(columns or [
      f'{r.lowering}/{r.remat}/{r.dtype}' for r in reports])
  rows: list[tuple[str, list[str]]] = []

  def row(label, fn):
    rows.append((label, [fn(r) for r in reports]))

  def section(title):
    rows.append((title, [''] * len(reports)))

  if any(r.global_batch != first.global_batch for r in reports):
    row('global batch', lambda r: str(r.global_batch))
  section('HBM per chip')
  row('  arguments', lambda r: _bytes(r.arguments))
  row('  outputs', lambda r: _bytes(r.outputs))
  row('  temporaries', lambda r: _bytes(r.temporaries))
  row('  generated code', lambda r: _bytes(r.generated_code))
  row('  aliased (donated state)', lambda r: _bytes(r.aliased))

  def total(r):
    if r.total is not None:
      return (f'{_bytes(r.total)} ({r.total / r.hbm_capacity:.0%} of '
              f'{r.hbm_capacity / GiB:.0f} GiB)')
    if r.oom_used is not None:
      return (f'libtpu: needs {_bytes(r.oom_used)} of {_bytes(r.oom_limit)} '
              'available')
    return 'libtpu: out of memory'
  row('  total (args+out-alias+temp+code)', total)
  def fits(r):
    if r.fits:
      return 'yes'
    if r.oom is None:
      return 'NO: the sum exceeds HBM (libtpu did compile it)'
    return 'NO, does not fit (libtpu: out of memory)'
  row('  fits', fits)
  row('  XLA peak_memory_in_bytes', lambda r: _bytes(r.xla_peak))
  section("XLA cost_analysis (XLA's count, per chip)")
  row('  flops', lambda r: _si(r.flops, 'FLOP'))
  row('  bytes accessed', lambda r: _si(r.bytes_accessed, 'B'))
  kinds = [k for k in COLLECTIVES if any(k in r.collectives for r in reports)]
  section('collectives in the optimized HLO (static count x result bytes)')
  for kind in kinds:
    def cell(r, kind=kind):
      c = r.collectives.get(kind)
      if not c:
        return '-'
      text = f'{c["count"]} x, {_bytes(c["bytes"])}'
      return text + (f' ({c["async"]} async)' if c['async'] else '')
    row(f'  {kind}', cell)
  if not kinds:
    row('  (none)', lambda r: '-' if r.oom is None else 'n/a')
  section('step time ESTIMATE (roofline per chip, ignores collectives)')
  lines_roof = [roofline(r, chip) for r in reports]
  rows.append((f'  compute: flops / {chip.peak_flops / 1e12:.0f} TFLOP/s',
               [_seconds(x.get('compute_seconds')) for x in lines_roof]))
  rows.append((f'  memory: bytes / {chip.hbm_bandwidth / 1e9:.0f} GB/s',
               [_seconds(x.get('memory_seconds')) for x in lines_roof]))
  rows.append(('  estimate: the max',
               [f'{_seconds(x["seconds"])} ({x["bound"]}-bound)' if x else '-'
                for x in lines_roof]))
  rows.append(('  clips/s (global batch / estimate)',
               [f'{x["clips_per_second"]:,.0f}' if x else '-'
                for x in lines_roof]))
  row('compile time (this CPU)', lambda r: f'{r.compile_seconds:.0f} s')

  width = max(len(label) for label, values in rows if any(values)) + 2
  col = max([len(c) for c in columns]
            + [len(v) for _, values in rows for v in values]) + 2
  for label, values in rows:
    if all(not v for v in values):
      lines.append(label)
    else:
      lines.append(label.ljust(width) + ''.join(v.ljust(col) for v in values)
                   .rstrip())
  header = ''.ljust(width) + ''.join(c.ljust(col) for c in columns).rstrip()
  lines.insert(2, header)
  oom = [r for r in reports if r.oom]
  for r in oom:
    lines.append(f'libtpu ({r.lowering}/{r.remat}/{r.dtype}): {r.oom[:600]}')
  return '\n'.join(lines)


def report_dict(report: Report) -> dict:
  out = dataclasses.asdict(report)
  out.pop('hlo')
  out['roofline_estimate'] = roofline(report, report.chip)
  return out
