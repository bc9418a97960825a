"""`python -m vidjax.export`: a checkpoint as a TF SavedModel (and TFLite).

  python -m vidjax.export --checkpoint=DIR --out=OUT [--tflite]
      [--batch_size=N] [--overwrite] [--platforms=cpu,cuda,tpu]

What OUT holds, its signatures and how to feed them: export.py. The
weights and their preprocessing contract come from --checkpoint (a
training workdir, one checkpoint step or a python -m vidjax.convert
output; source_flags.py). Bad input (a checkpoint without a contract, an
OUT that exists or cannot be written, an export a converter refuses)
prints one `vidjax: error: ...` line and exits 1.
"""
from __future__ import annotations

from collections.abc import Sequence
import sys

from absl import flags

from vidjax import cli
from vidjax.errors import VidjaxError
from vidjax.inference import export_stream
from vidjax.inference import source_flags
from vidjax.inference.export_savedmodel import PLATFORMS


def _define_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, dict]:
  fv = flags.FlagValues()
  holders = source_flags.define(fv, argv)
  holders.update(
      out=flags.DEFINE_string(
          'out', None, 'The SavedModel directory to write (created; written '
          'whole or not at all).', flag_values=fv),
      overwrite=flags.DEFINE_boolean(
          'overwrite', False, 'Replace an earlier export at --out.',
          flag_values=fv),
      tflite=flags.DEFINE_boolean(
          'tflite', False, 'Also convert to TFLite: an online TSM\'s stream '
          'step (stream_step.tflite), any other model on whole clips '
          '(model.tflite).', flag_values=fv),
      batch_size=flags.DEFINE_integer(
          'batch_size', None, 'A fixed batch for the SavedModel (default: '
          'any batch) and the TFLite model (default: 1, or any batch where '
          '1 does not convert).', lower_bound=1, flag_values=fv),
      platforms=flags.DEFINE_list(
          'platforms', list(PLATFORMS), 'The platforms the SavedModel runs '
          f'on, each lowered into it (of {",".join(PLATFORMS)}).',
          flag_values=fv),
  )
  return fv, holders


def _tensors(table: dict) -> str:
  """'frame [None, 32, 32, 3], 8 state_* tensors' (each listed in
  export.json)."""
  shown = [f'{k} {v[0]}' for k, v in table.items()
           if not k.startswith(export_stream.PREFIX)]
  states = len(table) - len(shown)
  if states:
    shown.append(f'{states} {export_stream.PREFIX}* tensors')
  return ', '.join(shown)


def summary(out: str, info: dict) -> str:
  """What was written, one signature per line."""
  lines = [f'{out}: SavedModel of {info["model_name"]} (weights '
           f'{info["fingerprint"]}, {info["source"]}), batch '
           f'{info["batch"]}, for {", ".join(info["platforms"])}']
  for name, table in info['signatures'].items():
    lines.append(f'  {name}: ({_tensors(table["inputs"])}) -> '
                 f'({_tensors(table["outputs"])})')
  lines.append(f'  input: {info["input"]["how"]}')
  if 'tflite' in info:
    lite = info['tflite']
    lines.append(f'{out}/{lite["file"]}: TFLite ({lite["ops"]}), batch '
                 f'{lite["batch_size"] or "any"}')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> int:
  """`python -m vidjax.export ...`; errors: one line, SystemExit(1)."""
  argv = list(argv)
  fv, holders = _define_flags(argv)

  def run(rest):
    if len(rest) > 1:
      raise VidjaxError(f'unexpected arguments: {" ".join(rest[1:])}')
    if not holders['out'].value:
      raise VidjaxError('give the output directory with --out=DIR')
    platforms = tuple(dict.fromkeys(holders['platforms'].value))
    unknown = [p for p in platforms if p not in PLATFORMS]
    if unknown or not platforms:
      raise VidjaxError(f'--platforms={",".join(platforms)}: want some of '
                        f'{",".join(PLATFORMS)}')
    from vidjax.inference import export  # pylint: disable=g-import-not-at-top
    loaded = source_flags.load(holders)
    info = export.export(
        loaded, holders['out'].value, batch_size=holders['batch_size'].value,
        tflite=holders['tflite'].value, overwrite=holders['overwrite'].value,
        platforms=platforms)
    print(summary(holders['out'].value, info), flush=True)
    return 0

  return cli.run(run, argv, flag_values=fv)


if __name__ == '__main__':
  sys.exit(main(sys.argv))
