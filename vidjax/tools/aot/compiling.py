"""The config's train step compiled by libtpu for a topology, and the largest
batch that fits.

`compile_step` compiles what the trainer runs (`vidjax.train.setup.build`)
for compile-only TPU devices and reads the compiled program's memory, cost
and collectives into a `Report`; `find_max_batch` searches the batch.
"""
from __future__ import annotations

from collections.abc import Callable
import copy
import math
import re
import time

import jax
import jax.numpy as jnp
import ml_collections

from vidjax import kernels as kernels_lib
from vidjax.errors import VidjaxError
from vidjax.models import registry
from vidjax.parallel import mesh as mesh_lib
from vidjax.tools.aot.collectives import parse_collectives
from vidjax.tools.aot.report import Report
from vidjax.tools.aot.topology import GiB
from vidjax.tools.aot.topology import Topology


def default_num_classes(config) -> int:
  """config.data.num_classes, else the dataset's class count."""
  n = config.data.num_classes
  if n:
    return int(n)
  dataset = config.data.name.split('/')[0]
  known = {'kinetics400': 400, 'kinetics600': 600, 'kinetics700': 700,
           'ssv2': 174, 'moving_shapes': 13}
  if dataset not in known:
    raise VidjaxError(f'cannot tell the class count of dataset {dataset!r}: '
                      'pass --num_classes (or set config.data.num_classes)')
  return known[dataset]


# libtpu 0.0.42: "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total
# memory required for HLO temporaries (24.59G) exceeds available HBM
# (15.75G)."; older ones: "Used 20.50G of 15.75G hbm."
_SIZE = r'([\d.]+)\s*([KMGT]?)i?B?'
_OOM_PATTERNS = (
    re.compile(r'required for ([\w ]+?) \(' + _SIZE + r'\) exceeds available '
               r'HBM \(' + _SIZE + r'\)', re.IGNORECASE),
    re.compile(r'()Used\s+' + _SIZE + r'\s+of\s+' + _SIZE + r'\s+hbm',
               re.IGNORECASE),
)


def _oom_figures(message: str) -> tuple[int | None, int | None]:
  """(bytes needed, bytes available) from libtpu's out-of-memory message."""
  scale = {'': 1, 'K': 2**10, 'M': 2**20, 'G': 2**30, 'T': 2**40}
  for pattern in _OOM_PATTERNS:
    match = pattern.search(message)
    if match:
      _, used, used_unit, limit, limit_unit = match.groups()
      return (int(float(used) * scale[used_unit.upper()]),
              int(float(limit) * scale[limit_unit.upper()]))
  return None, None


def _is_oom(error: Exception) -> bool:
  text = str(error)
  return ('RESOURCE_EXHAUSTED' in text or 'Ran out of memory' in text
          or 'out of memory' in text.lower())


def _model_options(config) -> dict:
  """The model's declared options: the config's values over the defaults."""
  options = dict(registry.get_spec(config.model_name).options)
  if 'model' in config:
    options.update(config.model.to_dict())
  return options


def resolve_options(config, lowering=None, remat=None, dtype=None):
  """The model options the tool compiles: flags, else the config's own.

  Lowering 'auto' (the default) would resolve by the platform running the
  tool, the CPU; it means what the trainer gets on a TPU instead.
  """
  options = _model_options(config)
  lowering = lowering or options.get('kernels', 'auto')
  lowering = kernels_lib.FORMER_NAMES.get(lowering, lowering)
  if lowering == 'auto':
    lowering = kernels_lib.default_kernels('tpu')
  remat = remat or options['remat']
  dtype = dtype or options['dtype'] or 'float32'
  dtype = jnp.dtype(dtype).name
  return lowering, remat, dtype


def compile_step(config: ml_collections.ConfigDict, topology: Topology, *,
                 batch_size: int | None = None, lowering: str | None = None,
                 remat: str | None = None, dtype: str | None = None,
                 num_classes: int | None = None,
                 keep_hlo: bool = False) -> Report:
  """Compiles `config`'s train step for `topology`; its per-chip figures.

  Args:
    config: a train config (configs/*.py); not modified. Its `mesh` (default
      {'data': -1}) lays the mesh over the topology's chips.
    topology: from load_topology.
    batch_size: the global batch (default config.batch_size).
    lowering, remat, dtype: model overrides (kernels 'plain'|'custom',
      formerly 'xla'|'cpu'; 'none'|'block'|
      'full', 'bfloat16'|'float32'); default: the config's (resolve_options).
    num_classes: default default_num_classes(config).
    keep_hlo: keep the optimized HLO text in `report.hlo`.

  Returns:
    A Report. A program libtpu refuses for lack of HBM gives fits=False and
    the compiler's message, not an exception.
  """
  from vidjax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(config)
  config.unlock()
  lowering, remat, dtype = resolve_options(config, lowering, remat, dtype)
  num_classes = num_classes or default_num_classes(config)
  mesh = mesh_lib.make_mesh(config.mesh, devices=topology.devices)
  batch = int(batch_size or config.batch_size)
  mesh_lib.check_batch(batch, mesh)
  # build() shards the labels by config.batch_size.
  config.batch_size = batch
  overrides = dict(remat=remat, dtype=jnp.dtype(dtype))
  if 'kernels' in registry.get_spec(config.model_name).option_names:
    overrides['kernels'] = lowering
  else:  # A model without a kernel set to choose.
    lowering = '-'
  setup = setup_lib.build(config, num_classes, mesh, **overrides)
  rng = jax.eval_shape(lambda: jax.random.key(0))
  report = Report(
      topology=topology.name + (f' x{topology.num_slices} slices'
                                if topology.num_slices > 1 else ''),
      chip=topology.chip.name, num_chips=len(topology.devices),
      mesh=dict(mesh.shape), global_batch=batch,
      per_chip_batch=batch // mesh.shape[mesh_lib.DATA_AXIS],
      clip_shape=tuple(setup.clip_shape), num_classes=num_classes,
      lowering=lowering, remat=remat, dtype=dtype,
      hbm_capacity=topology.chip.hbm_bytes, fits=False)
  start = time.perf_counter()
  try:
    with setup.context():
      lowered = setup.train_step.lower(setup.abstract_state,
                                       setup.abstract_batch(batch), rng)
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except
    if not _is_oom(e):
      raise
    report.compile_seconds = time.perf_counter() - start
    report.oom = ' '.join(str(e).split())
    report.oom_used, report.oom_limit = _oom_figures(report.oom)
    return report
  report.compile_seconds = time.perf_counter() - start

  memory = compiled.memory_analysis()
  report.arguments = int(memory.argument_size_in_bytes)
  report.outputs = int(memory.output_size_in_bytes)
  report.temporaries = int(memory.temp_size_in_bytes)
  report.generated_code = int(memory.generated_code_size_in_bytes)
  report.aliased = int(memory.alias_size_in_bytes)
  report.total = (report.arguments + report.outputs - report.aliased
                  + report.temporaries + report.generated_code)
  report.xla_peak = getattr(memory, 'peak_memory_in_bytes', None)
  report.fits = report.total <= report.hbm_capacity

  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  report.flops = float(cost.get('flops', 0.0))
  report.bytes_accessed = float(cost.get('bytes accessed', 0.0))
  report.transcendentals = float(cost.get('transcendentals', 0.0))
  if 'optimal_seconds' in cost:
    report.xla_optimal_seconds = float(cost['optimal_seconds'])
  hlo = compiled.as_text()
  report.collectives = parse_collectives(hlo)
  if keep_hlo:
    report.hlo = hlo
  return report


def find_max_batch(config, topology: Topology, *, start: int = 1,
                   max_per_chip: int = 1024,
                   progress: Callable[[str], None] | None = print,
                   **options) -> tuple[Report | None, list[Report]]:
  """The largest per-chip batch whose step fits HBM: (its report, probes).

  Doubles the per-chip batch from `start` until a compile does not fit, then
  bisects; global batch = per chip × the mesh's data axis. If `start` does
  not fit, the search restarts from 1. `options` go to compile_step
  (lowering, remat, dtype, num_classes).

  The search assumes memory grows with the batch. On TPU it need not: XLA
  tiles arrays (8 × 128 and such), so a small per-chip batch can be padded
  and laid out differently, and S3D-G at 4 clips per chip measured more
  HBM than at 8 (docs/scale.md). Every probe is printed; the answer is
  the largest fitting batch the search saw.
  """
  data = mesh_lib.mesh_shape(config.mesh, len(topology.devices))[0]
  probes: list[Report] = []
  results: dict[int, Report] = {}

  def probe(per_chip: int, remaining: str) -> bool:
    report = compile_step(config, topology, batch_size=per_chip * data,
                          **options)
    probes.append(report)
    results[per_chip] = report
    if progress:
      mean = sum(p.compile_seconds for p in probes) / len(probes)
      if report.total is not None:
        used_text = (f'{report.total / GiB:.2f} GiB of '
                     f'{report.hbm_capacity / GiB:.0f} GiB')
      elif report.oom_used is not None:
        used_text = (f'libtpu: needs {report.oom_used / GiB:.2f} GiB of '
                     f'{report.oom_limit / GiB:.2f} GiB available')
      else:
        used_text = 'libtpu: out of memory'
      progress(f'probe {len(probes)}: {per_chip} per chip (global '
               f'{per_chip * data}): {used_text}, '
               f'{"fits" if report.fits else "does not fit"}  '
               f'[{report.compile_seconds:.0f} s; {mean:.0f} s per compile; '
               f'{remaining(mean) if callable(remaining) else remaining}]')
    return report.fits

  lo, hi = 0, None
  per_chip = max(int(start), 1)
  if per_chip > 1 and not probe(per_chip, 'the starting batch'):
    hi, per_chip = per_chip, 1
  elif per_chip > 1:
    lo, per_chip = per_chip, per_chip * 2
  while per_chip <= max_per_chip and (hi is None or per_chip < hi):
    if probe(per_chip, 'doubling'):
      lo = per_chip
      per_chip *= 2
    else:
      hi = per_chip
      break
  if lo == 0:
    return None, probes
  if hi is None:
    return results[lo], probes
  while hi - lo > 1:
    mid = (lo + hi) // 2
    left = max(math.ceil(math.log2(hi - lo)) - 1, 0)
    eta = lambda mean, left=left: (  # noqa: E731
        f'{left} more probe{"s" if left != 1 else ""} at most, '
        f'~{left * mean / 60:.1f} min')
    if probe(mid, eta):
      lo = mid
    else:
      hi = mid
  return results[lo], probes
