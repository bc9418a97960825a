"""Does a config's train step fit a TPU? Compiled ahead of time, on this CPU.

  python -m vidjax.tools.aot --config=configs/kinetics400_s3dg.py \
      --topology=v5e:4x4 --dtype=bfloat16
  python -m vidjax.tools.aot --config=configs/kinetics400_s3dg.py \
      --topology=v5e:4x4 --lowering=both --remat=block --json=/tmp/aot.json
  python -m vidjax.tools.aot --config=configs/demo.py --topology=v4:2x2x2 \
      --find_max_batch

Like MaxText's train_compile.py: libtpu compiles the config's real train step
(`vidjax.train.steps.build`, what the trainer runs: the same model, state
shardings, donated state and optimizer) for a TPU topology that is not
attached, and the compiled program says, per chip:

  * HBM: arguments (the state and the batch shard), outputs, temporaries
    (XLA's buffer assignment; what stays in VMEM is not counted), generated
    code, and the aliased bytes (the donated state, which the outputs reuse).
    Total = arguments + outputs - aliased + temporaries + code, against the
    chip's HBM: fits or does not fit. When it does not, libtpu refuses to
    compile ("Ran out of memory in memory space hbm"); the report then shows
    the compiler's own figures from that message;
  * flops and bytes accessed: XLA's `cost_analysis()` of the partitioned
    program one chip runs (XLA's count, not a MAC count; vidjax.tools.profile
    has those);
  * collectives in the optimized HLO, per kind (all-reduce, all-gather,
    reduce-scatter, collective-permute, all-to-all, including their async
    `-start` forms): how many instructions and the bytes of their results.
    A static count: an instruction inside a loop counts once;
  * a roofline estimate of the step time: max(flops / peak bf16 flops,
    bytes / HBM bandwidth) per chip. An estimate only: it ignores the
    collectives, overlap and everything XLA's cost model does not see.

`--batch_size` is the global batch (as config.batch_size); the per-chip
figure is global / the mesh's data axis. `--find_max_batch` searches the
largest per-chip batch that fits (doubling from 1, then bisection; one
compile per probe). `--lowering=both` compiles the 'plain' and 'custom'
kernel sets (vidjax/kernels/; 'xla' and 'cpu' are their former names) and
prints them side by side.

Topology names are libtpu's, GENERATION:AxB (v5e, v6e) or AxBxC (v4, v5p),
in chips, e.g. v5e:2x2 (a v5litepod-4), v5e:4x4 (v5litepod-16), v4:2x2x1
(v4-8), v5p:2x2x2 (v5p-16). `--num_slices=N` makes N such slices joined over
DCN (the mesh's data axis spans them). Needs libtpu (`jax[tpu]`); no TPU.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

# Configs import the data pipeline (TensorFlow): keep its banners out of the
# report, as vidjax.main does.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from vidjax import platform  # pylint: disable=g-import-not-at-top

# CPU for everything that runs here; libtpu is only asked for topologies.
platform.prefer_cpu_without_accelerator()
if not platform.tpu_attached():
  # libtpu locks /tmp/libtpu_lockfile so that one process owns the TPU; with
  # no TPU here there is nothing to own, and the lock would keep two AOT
  # compiles (or the tool and the tests) from running side by side.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import ml_collections

from vidjax.errors import VidjaxError
from vidjax import kernels as kernels_lib
from vidjax.parallel import mesh as mesh_lib

GiB = 2**30

# ---------------------------------------------------------------------------
# Chips.


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip peak figures of a TPU generation."""
  name: str                 # 'v5e', as in topology names.
  device_kind: str          # jax Device.device_kind.
  peak_flops: float         # bf16 FLOP/s.
  hbm_bandwidth: float      # bytes/s.
  hbm_bytes: int


# Source: Cloud TPU docs, the system architecture page of each generation
# (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e): peak bf16 compute, HBM
# capacity and bandwidth per chip. The docs write the capacities as "GiB"
# (v4) or "GB" (v5e, v5p, v6e); they are 16/32/95 GiB parts, and libtpu's
# own limit (in its out-of-memory message) is a little lower. v4 and v5p
# chips have two TensorCores run as one JAX device (megacore), so a device
# is a chip on every generation here.
CHIPS = {
    'v4': Chip('v4', 'TPU v4', 275e12, 1200e9, 32 * GiB),
    'v5e': Chip('v5e', 'TPU v5 lite', 197e12, 819e9, 16 * GiB),
    'v5p': Chip('v5p', 'TPU v5', 459e12, 2765e9, 95 * GiB),
    'v6e': Chip('v6e', 'TPU v6 lite', 918e12, 1638e9, 32 * GiB),
}
# Topologies this libtpu was seen to accept (jax 0.10.2); any AxB / AxBxC
# libtpu knows works.
EXAMPLE_TOPOLOGIES = ('v4:2x2x1', 'v4:2x2x2', 'v5e:1x1', 'v5e:2x2',
                      'v5e:2x4', 'v5e:4x4', 'v5p:2x2x1', 'v5p:2x2x2',
                      'v6e:1x1', 'v6e:2x2', 'v6e:4x4')


@dataclasses.dataclass
class Topology:
  name: str
  chip: Chip
  devices: list            # Compile-only jax Devices, one per chip.
  num_slices: int = 1


@contextlib.contextmanager
def _captured_stderr():
  """Redirects fd 2 (libtpu logs from C++) to a file; yields [its text]."""
  sys.stderr.flush()
  saved = os.dup(2)
  out = []
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield out
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      out.append(tmp.read().decode(errors='replace'))


def _require_libtpu():
  if importlib.util.find_spec('libtpu') is None:
    raise VidjaxError(
        'the AOT tool compiles with libtpu, which is not installed: '
        f'pip install "jax[tpu]=={jax.__version__}"')


def _unknown(name: str) -> VidjaxError:
  return VidjaxError(
      f"libtpu does not know topology '{name}' (known: "
      f"{', '.join(EXAMPLE_TOPOLOGIES)}, ...: GENERATION:AxB or AxBxC in "
      'chips)')


def load_topology(name: str, num_slices: int = 1) -> Topology:
  """libtpu's compile-only devices of topology `name`, e.g. 'v5e:4x4'."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  _require_libtpu()
  generation, _, layout = name.partition(':')
  kwargs = {}
  if generation == 'v4':
    kwargs['chip_config_name'] = 'megacore'  # One device per chip (MaxText).
  if num_slices > 1:
    kwargs['num_slices'] = num_slices
  dims = [int(d) for d in re.findall(r'\d+', layout.split('_')[0])] + [1]
  logs = []
  for attempt in range(2):
    with _captured_stderr() as log:
      try:
        devices = topologies.get_topology_desc(name, 'tpu', **kwargs).devices
        error = None
      except Exception as e:  # pylint: disable=broad-except
        devices, error = None, e
    logs.append(log[0])
    if error is None:
      break
    message = str(error)
    # libtpu's default host is 2x2x1 chips: a smaller slice (v5e:1x1) needs
    # its own host bounds.
    if attempt == 0 and 'chips_per_host_bounds' in message and dims[:-1]:
      kwargs['chips_per_host_bounds'] = tuple(
          min(d, h) for d, h in zip(dims[:3], (2, 2, 1)))
      continue
    if 'libtpu_lockfile' in message:
      raise VidjaxError(
          'another process holds libtpu (/tmp/libtpu_lockfile); without a '
          'TPU attached, set ALLOW_MULTIPLE_LIBTPU_LOAD=1') from error
    if 'INVALID_ARGUMENT' in message and ('topology' in message.lower()
                                          or 'TPU' in message):
      raise _unknown(name) from error
    sys.stderr.write(''.join(logs))
    raise VidjaxError(f'libtpu failed to describe topology {name!r}: '
                      f'{message}') from error
  kind = devices[0].device_kind
  chip = next((c for c in CHIPS.values() if c.device_kind == kind), None)
  if chip is None:
    raise VidjaxError(f'no chip figures for {kind} (topology {name!r}); '
                      f'vidjax knows {", ".join(CHIPS)} (CHIPS in '
                      'vidjax/tools/aot.py)')
  return Topology(name=name, chip=chip, devices=list(devices),
                  num_slices=num_slices)


# ---------------------------------------------------------------------------
# HLO: collectives.

COLLECTIVES = ('all-reduce', 'all-gather', 'reduce-scatter',
               'collective-permute', 'all-to-all')
_DTYPE_BITS = {'pred': 8, 's2': 2, 'u2': 2, 's4': 4, 'u4': 4, 's8': 8,
               'u8': 8, 's16': 16, 'u16': 16, 'f16': 16, 'bf16': 16,
               's32': 32, 'u32': 32, 'f32': 32, 's64': 64, 'u64': 64,
               'f64': 64, 'c64': 64, 'c128': 128, 'token': 0}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[^\s=]+\s*=\s*(.*)$')
_OP = re.compile(r'^(.*?)\s*\b([a-z][a-z0-9\-]*)\(')
_SHAPE_TOKEN = re.compile(r'\(|\)|([a-z][a-z0-9]*)\[([^\]]*)\]')


def _strip_hlo_decorations(text: str) -> str:
  """Removes /*comments*/ and {layouts}, which may hold parentheses."""
  text = re.sub(r'/\*.*?\*/', '', text)
  while True:
    stripped = re.sub(r'\{[^{}]*\}', '', text)
    if stripped == text:
      return text
    text = stripped


def _array_bytes(dtype: str, dims: str) -> int:
  bits = _DTYPE_BITS.get(dtype)
  if bits is None:
    bits = 8 if dtype.startswith('f8') else 4 if dtype.startswith('f4') else 32
  size = math.prod(int(d) for d in re.findall(r'\d+', dims))
  return (size * bits + 7) // 8


def parse_shape(shape: str):
  """An HLO shape as nested lists of leaf byte counts.

  'f32[8,16]{1,0}' → 512; '(f32[2]{0}, (bf16[4]{0}, u32[]))' → [8, [8, 4]].
  """
  shape = _strip_hlo_decorations(shape)
  stack = [[]]
  for match in _SHAPE_TOKEN.finditer(shape):
    token = match.group(0)
    if token == '(':
      stack.append([])
    elif token == ')':
      inner = stack.pop()
      stack[-1].append(inner)
    else:
      stack[-1].append(_array_bytes(match.group(1), match.group(2)))
  top = stack[0]
  return top[0] if len(top) == 1 else top


def _total(tree) -> int:
  return tree if isinstance(tree, int) else sum(_total(t) for t in tree)


def parse_collectives(hlo_text: str) -> dict[str, dict[str, int]]:
  """{kind: {'count', 'bytes', 'async'}} of the collectives in `hlo_text`.

  Counts instructions of every computation (so a collective XLA wrapped in
  an async computation counts once, by its inner instruction); `-done`
  halves and `async-start/-done` wrappers are not counted again. Bytes are
  the results': the whole shape for synchronous ops and `all-reduce-start`
  (a tuple when XLA combined several all-reduces), the second element for
  `all-gather-start` and `collective-permute-start`, whose shapes are
  (operands, results[, context]).
  """
  out = {}
  names = tuple(COLLECTIVES)
  for line in hlo_text.splitlines():
    if not any(n in line for n in names):
      continue
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    op_match = _OP.match(_strip_hlo_decorations(match.group(1)))
    if not op_match:
      continue
    shape, op = op_match.groups()
    is_async = op.endswith('-start')
    kind = op[:-len('-start')] if is_async else op
    if kind not in COLLECTIVES:
      continue
    tree = parse_shape(shape)
    if (is_async and kind in ('all-gather', 'collective-permute')
        and isinstance(tree, list) and len(tree) >= 2):
      tree = tree[1]
    entry = out.setdefault(kind, {'count': 0, 'bytes': 0, 'async': 0})
    entry['count'] += 1
    entry['bytes'] += _total(tree)
    entry['async'] += int(is_async)
  return {k: out[k] for k in COLLECTIVES if k in out}


# ---------------------------------------------------------------------------
# Compiling.


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


def default_num_classes(config) -> int:
  """config.data.num_classes, else the dataset's class count."""
  n = config.data.get('num_classes')
  if n:
    return int(n)
  dataset = str(config.data.get('name', '')).split('/')[0]
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


def _has_option(model_name: str, option: str) -> bool:
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  factory = registry.get_spec(model_name).factory
  return option in getattr(factory, '__dataclass_fields__', {})


def _model_option(config, name, default):
  return config.model.get(name, default) if 'model' in config else default


def resolve_options(config, lowering=None, remat=None, dtype=None):
  """The model options the tool compiles: flags, else the config's own.

  Lowering 'auto' (the default) would resolve by the platform running the
  tool, the CPU; it means what the trainer gets on a TPU instead.
  """
  lowering = lowering or _model_option(config, 'kernels', 'auto')
  lowering = kernels_lib.FORMER_NAMES.get(lowering, lowering)
  if lowering == 'auto':
    lowering = kernels_lib.default_kernels('tpu')
  remat = remat or _model_option(config, 'remat', 'none')
  dtype = dtype or _model_option(config, 'dtype', None) or 'float32'
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
  from vidjax.train import steps  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(config)
  config.unlock()
  lowering, remat, dtype = resolve_options(config, lowering, remat, dtype)
  num_classes = num_classes or default_num_classes(config)
  mesh = mesh_lib.make_mesh(config.get('mesh'), devices=topology.devices)
  batch = int(batch_size or config.batch_size)
  mesh_lib.check_batch(batch, mesh)
  # build() shards the labels by config.batch_size.
  config.batch_size = batch
  overrides = dict(remat=remat, dtype=jnp.dtype(dtype))
  if _has_option(config.model_name, 'kernels'):
    overrides['kernels'] = lowering
  else:  # A model without a kernel set to choose.
    lowering = '-'
  setup = steps.build(config, num_classes, mesh, **overrides)
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


# ---------------------------------------------------------------------------
# Roofline.


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


# ---------------------------------------------------------------------------
# The largest batch that fits.


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
  data = mesh_lib.mesh_shape(config.get('mesh'),
                             len(topology.devices))[0]
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


# ---------------------------------------------------------------------------
# Output.


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


# ---------------------------------------------------------------------------
# Command line.


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  config = config_flags.DEFINE_config_file(
      'config', None, 'Path to a config file (configs/*.py), optionally '
      'followed by :ARG for its get_config(ARG).', lock_config=True)
  f = {
      'config': config,
      'topology': flags.DEFINE_string(
          'topology', None, "libtpu topology, e.g. 'v5e:4x4', 'v4:2x2x2', "
          "'v5p:2x2x1', 'v6e:2x2' (chips)."),
      'num_slices': flags.DEFINE_integer(
          'num_slices', 1, 'Slices of --topology joined over DCN.'),
      'batch_size': flags.DEFINE_integer(
          'batch_size', None, 'Global batch (default: config.batch_size).'),
      'find_max_batch': flags.DEFINE_bool(
          'find_max_batch', False, 'Search the largest per-chip batch that '
          'fits HBM (one compile per probe), doubling from 1 (or from '
          "--batch_size's per-chip figure) then bisecting."),
      'lowering': flags.DEFINE_enum(
          'lowering', None, ['plain', 'custom', 'xla', 'cpu', 'both'],
          "Kernel set ('xla' and 'cpu': the former names of 'plain' and "
          "'custom'; default: the config's model.kernels, 'auto' meaning "
          "what a TPU gets, vidjax.kernels.DEFAULT_KERNELS); 'both' "
          'compiles both side by side.'),
      'remat': flags.DEFINE_enum(
          'remat', None, ['none', 'block', 'full'],
          "Rematerialisation (default: the config's, else 'none')."),
      'dtype': flags.DEFINE_enum(
          'dtype', None, ['bfloat16', 'float32'],
          "Compute dtype (default: the config's, else float32)."),
      'num_classes': flags.DEFINE_integer(
          'num_classes', None, 'Classifier size (default: '
          "config.data.num_classes, else the dataset's)."),
      'mesh': flags.DEFINE_string(
          'mesh', None, "Mesh axes, e.g. 'data=-1,time=2' (default: "
          "config.mesh, else data=-1)."),
      'json': flags.DEFINE_string(
          'json', None, 'Also write the reports as JSON to this path.'),
      'hlo': flags.DEFINE_string(
          'hlo', None, 'Write the optimized HLO text to PATH (PATH.LOWERING '
          'with --lowering=both).'),
      'verbose': flags.DEFINE_bool(
          'verbose', False, 'Show tracebacks for user errors.'),
  }
  flags.mark_flags_as_required(['config', 'topology'])
  return f


_FLAGS = None


def _root_cause(error: BaseException) -> BaseException:
  while error.__cause__ is not None:
    error = error.__cause__
  return error


def fail(error: BaseException, verbose: bool = False, code: int = 1):
  """One `vidjax: error:` line (the traceback with --verbose)."""
  from vidjax import cli  # pylint: disable=g-import-not-at-top
  if verbose:
    raise error
  if isinstance(error, VidjaxError):
    message = str(error)
  else:
    cause = _root_cause(error)
    if isinstance(cause, OSError) and cause.filename:
      message = f'cannot read config file {cause.filename}: {cause.strerror}'
    elif isinstance(cause, (KeyError, AttributeError)):
      message = ("unknown config key "
                 f"'{str(cause).strip(chr(34) + chr(39))}'")
    else:
      message = ' '.join(str(cause).split())
  cli.exit_with_error(message, code)


def parse_mesh(text: str) -> dict[str, int]:
  """'data=-1,time=2' → {'data': -1, 'time': 2}."""
  mesh = {}
  for part in filter(None, (p.strip() for p in text.split(','))):
    name, sep, size = part.partition('=')
    if not sep or not re.fullmatch(r'-?\d+', size.strip()):
      raise VidjaxError(f"--mesh={text!r}: want e.g. 'data=-1,time=2'")
    mesh[name.strip()] = int(size)
  return mesh


def main(argv):
  if len(argv) > 1:
    fail(VidjaxError(f'unexpected arguments: {" ".join(argv[1:])}'))
  f = _FLAGS
  if f is None:
    raise RuntimeError('run() defines the flags: python -m vidjax.tools.aot')
  verbose = f['verbose'].value
  try:
    topology = load_topology(f['topology'].value, f['num_slices'].value)
  except VidjaxError as e:
    fail(e, verbose)
  try:
    # config_flags defers a config file's load error until first access.
    config = f['config'].value
    config.keys()
  except Exception as e:  # pylint: disable=broad-except
    fail(e, verbose)
  try:
    config = copy.deepcopy(config)
    config.unlock()
    if f['mesh'].value:
      config.mesh = parse_mesh(f['mesh'].value)
    lowerings = (['plain', 'custom'] if f['lowering'].value == 'both'
                 else [f['lowering'].value])
    options = dict(remat=f['remat'].value, dtype=f['dtype'].value,
                   num_classes=f['num_classes'].value)
    reports = []
    searches = []
    if f['find_max_batch'].value:
      # From --batch_size's per-chip figure if given (saves the probes
      # below it), else from 1.
      start = 1
      if f['batch_size'].value:
        data = mesh_lib.mesh_shape(config.get('mesh'),
                                   len(topology.devices))[0]
        start = max(f['batch_size'].value // data, 1)
      for lowering in lowerings:
        best, probes = find_max_batch(
            config, topology, start=start, lowering=lowering,
            progress=lambda line: print(line, flush=True), **options)
        searches.append((best, probes))
        if best is None:
          print(f'lowering {probes[0].lowering}: not even 1 clip per chip '
                'fits.')
          reports.append(probes[0])
        else:
          print(f'lowering {best.lowering}: largest batch that fits: '
                f'{best.per_chip_batch} per chip, {best.global_batch} '
                f'global ({len(probes)} compiles, '
                f'{sum(p.compile_seconds for p in probes) / 60:.1f} min).')
          reports.append(best)
    else:
      for lowering in lowerings:
        report = compile_step(config, topology,
                              batch_size=f['batch_size'].value,
                              lowering=lowering, keep_hlo=bool(f['hlo'].value),
                              **options)
        if f['hlo'].value and report.hlo is not None:
          path = f['hlo'].value + (f'.{report.lowering}'
                                   if len(lowerings) > 1 else '')
          with open(path, 'w') as out:
            out.write(report.hlo)
          report.hlo = None
          print(f'HLO: {path}')
        reports.append(report)
  except (VidjaxError, ValueError) as e:
    fail(e, verbose)
  print(format_report(reports))
  if f['json'].value:
    with open(f['json'].value, 'w') as out:
      if searches:
        data = [{'best': report_dict(best) if best else None,
                 'probes': [report_dict(p) for p in probes]}
                for best, probes in searches]
      else:
        data = [report_dict(r) for r in reports]
      json.dump(data, out, indent=2)
    print(f'JSON: {f["json"].value}')


def run():
  global _FLAGS
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import logging  # pylint: disable=g-import-not-at-top
  from vidjax import cli  # pylint: disable=g-import-not-at-top
  _FLAGS = _define_flags()
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=cli.flags_parser(fail))


if __name__ == '__main__':
  run()
