"""Does a config's train step fit a TPU? Compiled ahead of time, on this CPU.

  python -m vidjax.tools.aot --config=configs/kinetics400_s3dg.py \\
      --topology=v5e:4x4 --dtype=bfloat16
  python -m vidjax.tools.aot --config=configs/kinetics400_s3dg.py \\
      --topology=v5e:4x4 --lowering=both --remat=block --json=/tmp/aot.json
  python -m vidjax.tools.aot --config=configs/demo.py --topology=v4:2x2x2 \\
      --find_max_batch

Like MaxText's train_compile.py: libtpu compiles the config's real train step
(`vidjax.train.setup.build`, what the trainer runs: the same model, state
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

import copy
import json
import re

from vidjax import cli
from vidjax import config as config_lib
from vidjax.errors import VidjaxError
from vidjax.parallel import mesh as mesh_lib
from vidjax.tools import files
from vidjax.tools.aot.compiling import compile_step
from vidjax.tools.aot.compiling import find_max_batch
from vidjax.tools.aot.report import format_report
from vidjax.tools.aot.report import report_dict
from vidjax.tools.aot.topology import load_topology


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
  }
  flags.mark_flags_as_required(['config', 'topology'])
  return f


_FLAGS = None


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
    raise VidjaxError(f'unexpected arguments: {" ".join(argv[1:])}')
  f = _FLAGS
  if f is None:
    raise RuntimeError('run() defines the flags: python -m vidjax.tools.aot')
  # Before compiling, which takes minutes: outputs that cannot be written.
  json_path, hlo_path = (f[flag].value and files.check_writable(
      f[flag].value, flag) for flag in ('json', 'hlo'))
  topology = load_topology(f['topology'].value, f['num_slices'].value)
  config = cli.load_config(f['config'])
  config_lib.validate(config)
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
        data = mesh_lib.mesh_shape(config.mesh, len(topology.devices))[0]
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
                              lowering=lowering, keep_hlo=bool(hlo_path),
                              **options)
        if hlo_path and report.hlo is not None:
          path = hlo_path + (f'.{report.lowering}'
                                   if len(lowerings) > 1 else '')
          files.write_text(path, report.hlo)
          report.hlo = None
          print(f'HLO: {path}')
        reports.append(report)
  except ValueError as e:  # A mesh or batch the topology cannot take.
    raise VidjaxError(str(e)) from e
  print(format_report(reports))
  if json_path:
    if searches:
      data = [{'best': report_dict(best) if best else None,
               'probes': [report_dict(p) for p in probes]}
              for best, probes in searches]
    else:
      data = [report_dict(r) for r in reports]
    files.write_text(json_path, json.dumps(data, indent=2))
    print(f'JSON: {json_path}')


def run():
  global _FLAGS
  _FLAGS = _define_flags()
  cli.run(main)
