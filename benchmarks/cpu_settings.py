"""How each side of a CPU benchmark is set up to run at its best.

A ratio against a peer means something only if the peer runs the way a
user who cares about CPU speed runs it. PyTorch's defaults are not that:
with `channels_last_3d` tensors torchvision's S3D infers a 2×16×224² batch
in 583–600 ms instead of 1099–1104 ms on our 2-core machine.

PyTorch's side follows PyTorch's own CPU advice:

- Memory format. The Performance Tuning Guide ("Enable channels_last
  memory format for computer vision models",
  https://pytorch.org/tutorials/recipes/recipes/tuning_guide.html) and the
  Channels Last tutorial it points to convert the model AND its input with
  `.to(memory_format=torch.channels_last)`; `channels_last_3d` is the same
  for 5-D (N, C, T, H, W) tensors. 3-D CNNs (S3D) take `channels_last_3d`,
  2-D CNNs over frames (TSM's ResNet on [N·T, C, H, W]) `channels_last`.
  Transformers have no layout choice: their activations are already
  [batch, tokens, channels], channels minor, and Hugging Face's TimeSformer
  reshapes its input to contiguous NCHW for the patch embedding itself.
- Allocator. The guide's "Switch Memory allocator": jemalloc or TCMalloc
  through LD_PRELOAD, because they keep and reuse freed memory where glibc
  hands large blocks back to the kernel (whose fresh pages it then zeroes,
  ~1 GB a step here). PyTorch's launcher, `torch.backends.xeon.run_cpu`
  (in torch 2.14: `set_memory_allocator`), prefers TCMalloc, then jemalloc,
  and gives jemalloc MALLOC_CONF=`JEMALLOC_CONF`; 'auto' does the same.
  Neither library is on PyPI; on Debian they are `libgoogle-perftools4`
  and `libjemalloc2`. A library that is absent is reported, never fatal:
  the side then runs on glibc's malloc and says so.
- Threads. The guide's "Utilize OpenMP": OMP_NUM_THREADS, and for GNU
  OpenMP (which PyTorch's wheels use) OMP_SCHEDULE=STATIC,
  OMP_PROC_BIND=CLOSE and GOMP_CPU_AFFINITY to pin the threads. "Grokking
  PyTorch Intel CPU Performance from First Principles"
  (https://pytorch.org/tutorials/intermediate/torchserve_with_ipex.html)
  and the launcher use one thread per *physical* core, never the
  hyperthreads; `physical_cpus` picks one logical CPU per core.
- Inference under `torch.no_grad()` (the guide's "Disable gradient
  calculation for validation or inference"; benchmarks' torch_infer) and
  `zero_grad(set_to_none=True)` in training (its "Use parameter.grad =
  None"), as the timed steps already do.

The vidjax side runs with `BEST_XLA_FLAGS`, the XLA:CPU flags
benchmarks/README.md measured fastest for the conv nets' training.

The runner calls `torch_settings` (from the --torch-* flags of
`add_torch_flags`) for the torch side's environment; in the side's own
process, `memory_format`, `format_of` and `loaded_allocator` apply and
report what the side really ran with.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import os
from typing import Any, Mapping, Sequence

# XLA:CPU hands dots and reductions to YNNPACK, the rest stays on XLA's own
# kernels (benchmarks/README.md, the 'ynn' setting).
BEST_XLA_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'

LAYOUTS = ('channels_last', 'contiguous')
ALLOCATORS = ('auto', 'tcmalloc', 'jemalloc', 'glibc')
THREADS = ('pinned', 'default')
# torch.backends.xeon.run_cpu's MALLOC_CONF for jemalloc.
JEMALLOC_CONF = 'oversize_threshold:1,background_thread:true,metadata_thp:auto'
# Where run_cpu looks, plus Debian's and Ubuntu's multiarch directory (where
# apt puts them, and run_cpu does not look).
LIBRARY_DIRS = ('/usr/local/lib', '/usr/local/lib64', '/usr/lib',
                '/usr/lib64', '/usr/lib/x86_64-linux-gnu',
                '/usr/lib/aarch64-linux-gnu')
# The full TCMalloc, not gperftools' _minimal, _debug or _and_profiler.
_LIBRARY_GLOBS = {'tcmalloc': ('libtcmalloc.so', 'libtcmalloc.so.[0-9]*'),
                  'jemalloc': ('libjemalloc.so', 'libjemalloc.so.[0-9]*')}
_SYSFS_CPU = '/sys/devices/system/cpu'


@dataclasses.dataclass(frozen=True)
class TorchSettings:
  """What the torch side runs with; `env` is its environment overrides."""
  layout: str                 # One of LAYOUTS.
  allocator: str              # The one in use: tcmalloc, jemalloc or glibc.
  library: str | None         # Its path (None for glibc).
  threads: str                # One of THREADS.
  cpus: tuple[int, ...]       # Pinned to these, one per physical core.
  note: str | None = None     # Why the allocator asked for is not in use.

  def env(self, base: Mapping[str, str] | None = None
          ) -> dict[str, str | None]:
    """The side's environment overrides (over `base`, default os.environ)."""
    base = os.environ if base is None else base
    env: dict[str, str | None] = {}
    if self.library:
      # Ahead of whatever the user preloads already, as run_cpu does.
      env['LD_PRELOAD'] = ':'.join(
          p for p in (self.library, base.get('LD_PRELOAD', '')) if p)
    if self.allocator == 'jemalloc':
      env['MALLOC_CONF'] = JEMALLOC_CONF
    if self.threads == 'pinned':
      env.update({
          'OMP_NUM_THREADS': str(len(self.cpus)),
          'OMP_SCHEDULE': 'STATIC',
          'OMP_PROC_BIND': 'CLOSE',
          'GOMP_CPU_AFFINITY': ' '.join(str(c) for c in self.cpus),
      })
    return env

  def describe(self) -> dict[str, Any]:
    return {'layout': self.layout, 'allocator': self.allocator,
            'allocator_library': self.library, 'threads': self.threads,
            'cpus': list(self.cpus), 'note': self.note}

  def line(self, layout: str | None = None) -> str:
    """One line for a benchmark's header; `layout` replaces the layout's
    name (a transformer has none)."""
    alloc = (f'{self.allocator} ({self.library})' if self.library
             else "glibc's malloc")
    threads = (f'{len(self.cpus)} OpenMP threads, one per physical core, '
               f'pinned to CPUs {" ".join(map(str, self.cpus))}'
               if self.threads == 'pinned' else "PyTorch's default threads")
    note = f' [{self.note}]' if self.note else ''
    return (f'layout {layout or self.layout}; allocator {alloc}{note}; '
            f'{threads}')


def find_library(name: str, dirs: Sequence[str] | None = None) -> str | None:
  """The path of allocator `name` ('tcmalloc' or 'jemalloc') in `dirs`
  (default LIBRARY_DIRS), or None."""
  for directory in LIBRARY_DIRS if dirs is None else dirs:
    for pattern in _LIBRARY_GLOBS[name]:
      matches = sorted(glob.glob(os.path.join(directory, pattern)))
      if matches:
        return matches[0]
  return None


def physical_cpus(cpus: Sequence[int] | None = None,
                  sysfs: str = _SYSFS_CPU) -> list[int]:
  """One logical CPU per physical core, of `cpus` (default: the CPUs this
  process may run on): the lowest-numbered sibling of each core. Without
  topology in sysfs, every CPU counts as a core."""
  if cpus is None:
    cpus = sorted(os.sched_getaffinity(0))
  chosen, seen = [], set()
  for cpu in sorted(cpus):
    topology = os.path.join(sysfs, f'cpu{cpu}', 'topology')
    try:
      with open(os.path.join(topology, 'physical_package_id'),
                encoding='utf-8') as f:
        package = f.read().strip()
      with open(os.path.join(topology, 'core_id'), encoding='utf-8') as f:
        core = (package, f.read().strip())
    except OSError:
      core = ('cpu', str(cpu))
    if core not in seen:
      seen.add(core)
      chosen.append(cpu)
  return chosen


def torch_settings(layout: str = 'channels_last', allocator: str = 'auto',
                   threads: str = 'pinned',
                   dirs: Sequence[str] | None = None,
                   cpus: Sequence[int] | None = None,
                   sysfs: str = _SYSFS_CPU) -> TorchSettings:
  """The torch side's settings; an allocator library that is not found in
  `dirs` (default LIBRARY_DIRS) leaves glibc's malloc in use, with a note
  saying so."""
  dirs = LIBRARY_DIRS if dirs is None else dirs
  for name, value, known in (('layout', layout, LAYOUTS),
                             ('allocator', allocator, ALLOCATORS),
                             ('threads', threads, THREADS)):
    if value not in known:
      raise ValueError(f'unknown torch {name} {value!r}; known: {known}')
  wanted = {'auto': ('tcmalloc', 'jemalloc'), 'glibc': ()}.get(
      allocator, (allocator,))
  used, library = 'glibc', None
  for name in wanted:
    library = find_library(name, dirs)
    if library:
      used = name
      break
  note = None
  if wanted and not library:
    where = ', '.join(dirs)
    note = (f'{" or ".join(wanted)} not found in {where}: glibc malloc in '
            'use (Debian: apt-get install libgoogle-perftools4 libjemalloc2)')
  return TorchSettings(layout=layout, allocator=used, library=library,
                       threads=threads,
                       cpus=tuple(physical_cpus(cpus, sysfs)), note=note)


# -------------------------------------------------------- the command line


def add_torch_flags(parser: argparse.ArgumentParser):
  parser.add_argument(
      '--torch-layout', default='channels_last', choices=LAYOUTS,
      help="PyTorch's memory format for conv nets: channels_last "
      "(channels_last_3d for 3-D CNNs; the guide's advice) or contiguous "
      "(PyTorch's default, the peer of figures before 2026-12-07)")
  parser.add_argument(
      '--torch-allocator', default='auto', choices=ALLOCATORS,
      help="PyTorch's malloc, preloaded: auto = TCMalloc, else jemalloc, "
      "else glibc (as torch.backends.xeon.run_cpu)")
  parser.add_argument(
      '--torch-threads', default='pinned', choices=THREADS,
      help='pinned: OMP_NUM_THREADS = physical cores, pinned one per core; '
      "default: PyTorch's own choice")


def torch_settings_from(args) -> TorchSettings:
  return torch_settings(args.torch_layout, args.torch_allocator,
                        args.torch_threads)


def torch_side_flags(args) -> list[str]:
  """The --torch-* flags the torch side's own process needs (the layout;
  allocator and threads reach it through its environment)."""
  return [f'--torch-layout={args.torch_layout}']


# ------------------------------------------------------- in a side process


def memory_format(layout: str, spatial_dims: int):
  """The torch.memory_format of `layout` for a conv net over `spatial_dims`
  (2: NCHW images, 3: NCTHW clips)."""
  import torch  # pylint: disable=g-import-not-at-top
  if layout == 'contiguous':
    return torch.contiguous_format
  if layout != 'channels_last':
    raise ValueError(f'unknown layout {layout!r}')
  return {2: torch.channels_last, 3: torch.channels_last_3d}[spatial_dims]


def _formats(tensor) -> list[str]:
  """Every memory format `tensor` is laid out in: channels-last first, since
  a tensor with size-1 axes (a 1×1×1 kernel) satisfies several."""
  import torch  # pylint: disable=g-import-not-at-top
  candidates = {4: [('channels_last', torch.channels_last)],
                5: [('channels_last_3d', torch.channels_last_3d)]}.get(
                    tensor.dim(), [])
  candidates.append(('contiguous', torch.contiguous_format))
  return [name for name, fmt in candidates
          if tensor.is_contiguous(memory_format=fmt)]


def format_of(tensor) -> str:
  """The name of the memory format `tensor` is laid out in ('strided' for
  none of them)."""
  return (_formats(tensor) or ['strided'])[0]


def weights_format(model) -> str:
  """The memory format all of `model`'s conv kernels (its 4-D and 5-D
  parameters) are in, 'mixed' if none is common to them."""
  common = None
  for p in model.parameters():
    if p.dim() >= 4:
      formats = _formats(p)
      common = formats if common is None else [f for f in common
                                               if f in formats]
  if common is None:
    return 'none'
  return common[0] if common else 'mixed'


def loaded_allocator(maps: str = '/proc/self/maps') -> str:
  """The malloc this process runs on, from the libraries mapped into it."""
  try:
    with open(maps, encoding='utf-8') as f:
      mapped = f.read()
  except OSError:
    return 'unknown'
  for name in ('tcmalloc', 'jemalloc'):
    if f'lib{name}' in mapped:
      return name
  return 'glibc'


def side_report(threads: int, **extra) -> dict[str, Any]:
  """What a side ran with, as it sees it: its malloc, compute threads, the
  thread variables of its environment, and `extra` (e.g. memory_format)."""
  omp = {k: os.environ[k] for k in ('OMP_NUM_THREADS', 'OMP_PROC_BIND',
                                    'OMP_SCHEDULE', 'GOMP_CPU_AFFINITY',
                                    'MALLOC_CONF') if k in os.environ}
  return {**extra, 'allocator': loaded_allocator(), 'threads': threads,
          **({'env': omp} if omp else {})}
