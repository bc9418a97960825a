"""`python -m vidjax.convert --model=s3d_torchvision --torch=s3d.pth --out=DIR`.

Converts a PyTorch checkpoint and writes DIR/variables (an orbax checkpoint
of {'params', 'batch_stats'}) and DIR/vidjax_model.json (model name, class
count, structural options and the preprocessing contract), which
`vidjax.inference.loader.load(DIR)` reads back.

The contract (how a clip is made from a video, and the class names) comes
from `--config=CONFIG.py`, the config the weights are used with, when
given; else from the reference code's evaluation protocol for these
weights (vidjax/convert/protocol.py says which). `--class_names_file`
names the classes; `--fps` and `--short_side` (a number or 'source') say
how the training videos were prepared, unknown (asked for by the tools
that decode videos) unless given or documented by the reference. Bad input
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
from ml_collections import config_flags

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
_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'The config the weights are used with (configs/*.py): '
    'the preprocessing contract saved with them. Default: the reference '
    "code's evaluation protocol (vidjax/convert/protocol.py).",
    lock_config=True)
_CLASS_NAMES_FILE = flags.DEFINE_string(
    'class_names_file', None, 'Class names, one per line (line i is class '
    'i), saved in the contract.')
_FPS = flags.DEFINE_string(
    'fps', None, "Frames per second the training videos were prepared at, or "
    "'source' (their own rate); saved in the contract.")
_SHORT_SIDE = flags.DEFINE_string(
    'short_side', None, 'Short side the training videos were prepared at, or '
    "'source' (as decoded); saved in the contract.")
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
  from vidjax.convert import protocol  # pylint: disable=g-import-not-at-top
  from vidjax.inference import loader  # pylint: disable=g-import-not-at-top
  from vidjax.inference import source_flags  # pylint: disable=g-import-not-at-top
  convert.output.check_paths(_TORCH.value, _OUT.value)
  convert.output.check_output(os.path.abspath(_OUT.value), _OVERWRITE.value)
  # The contract's inputs too, before converting.
  config = cli.load_config(_CONFIG) if _CONFIG.value is not None else None
  class_names = (loader.read_class_names(_CLASS_NAMES_FILE.value)
                 if _CLASS_NAMES_FILE.value else None)
  preparation = {
      'fps': source_flags.preparation_value('fps', _FPS.value),
      'short_side': source_flags.preparation_value('short_side',
                                                   _SHORT_SIDE.value)}
  model, variables = convert.load_torch(_MODEL.value, _TORCH.value,
                                        **parse_options(_OPTION.value))
  options = convert.model_options(_MODEL.value, model)
  contract = protocol.contract_for(
      _MODEL.value, model, options, config=config, class_names=class_names,
      preparation=preparation)
  out = convert.save_converted(
      _OUT.value, _MODEL.value, model.num_classes, variables,
      options=options, contract=contract, overwrite=_OVERWRITE.value)
  count = sum(a.size for a in convert.mapping.flatten(variables).values())
  print(f'Converted {_TORCH.value} to {_MODEL.value} '
        f'({model.num_classes} classes, {count:,} values): {out}')


if __name__ == '__main__':
  cli.run(main)
