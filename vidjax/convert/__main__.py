"""`python -m vidjax.convert --model=s3d_torchvision --torch=s3d.pth --out=DIR`.

Converts a PyTorch checkpoint and writes DIR/variables (an orbax checkpoint
of {'params', 'batch_stats'}) and DIR/vidjax_model.json (model name and class
count), which `vidjax.convert.restore_converted(DIR)` reads back. Bad input
prints one `vidjax: error: ...` line (`--verbose` shows the traceback) and
exits 1.

DIR is written whole beside itself and swapped in on success: with
`--overwrite` an existing conversion is replaced only then, and a failed
write (a full disk) leaves it as it was. DIR must be new, empty or a
conversion (checked before converting); it never holds nor sits inside the
source.
"""
import os

from absl import app
from absl import flags

from vidjax import cli
from vidjax.errors import VidjaxError

_MODEL = flags.DEFINE_string(
    'model', None, 'vidjax model the checkpoint is for, e.g. s3d_torchvision.')
_TORCH = flags.DEFINE_string(
    'torch', None, 'PyTorch checkpoint file (a state dict, bare or under '
    "'state_dict' or 'model').")
_OUT = flags.DEFINE_string('out', None, 'Output directory.')
_OPTION = flags.DEFINE_multi_string(
    'option', [], 'key=value the checkpoint cannot tell, repeatable (a '
    'TimeSformer state dict: --option=num_heads=12).')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Replace an existing conversion in --out (only once '
    'the new one is written).')
flags.mark_flags_as_required(['model', 'torch', 'out'])


def parse_options(items) -> dict:
  """['num_heads=12', 'qkv_bias=false'] → {'num_heads': 12, ...}."""
  options = {}
  for item in items:
    key, sep, text = item.partition('=')
    if not sep or not key:
      raise VidjaxError(f'--option wants key=value, got {item!r}')
    value = {'true': True, 'false': False}.get(text.lower(), text)
    if isinstance(value, str):
      for kind in (int, float):
        try:
          value = kind(text)
          break
        except ValueError:
          pass
    options[key] = value
  return options


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that flag errors answer before JAX loads.
  from vidjax import convert  # pylint: disable=g-import-not-at-top

  # Before converting, which may take minutes: an output that cannot be
  # written (or replaced) is known now.
  convert.output.check_paths(_TORCH.value, _OUT.value)
  convert.output.check_output(os.path.abspath(_OUT.value), _OVERWRITE.value)
  model, variables = convert.load_torch(_MODEL.value, _TORCH.value,
                                        **parse_options(_OPTION.value))
  out = convert.save_converted(
      _OUT.value, _MODEL.value, model.num_classes, variables,
      options=convert.model_options(_MODEL.value, model),
      overwrite=_OVERWRITE.value)
  count = sum(a.size for a in convert.mapping.flatten(variables).values())
  print(f'Converted {_TORCH.value} to {_MODEL.value} '
        f'({model.num_classes} classes, {count:,} values): {out}')


if __name__ == '__main__':
  cli.run(main)
