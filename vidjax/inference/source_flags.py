"""The flags every inference command shares: which weights, and the contract.

  --checkpoint=DIR   a training workdir, a checkpoint step or a conversion
  --which=latest|best, --step=N   a workdir's checkpoint
  --config=CONFIG.py  the training config, for a checkpoint saved before
                      vidjax saved the preprocessing contract
  --fps, --short_side, --jpeg_quality, --class_names_file
                      contract fields an older checkpoint lacks (or to
                      override what it says, at your own risk of skew);
                      --fps and --short_side also take 'source'

Each command defines them on its own FlagValues (`define`), so `main` can
be called again in one process (the tests do), and turns them into a
`loader.Loaded` with `load`.
"""
from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib
from vidjax.inference import loader


def define(fv: flags.FlagValues, argv) -> dict:
  """Defines the shared flags on `fv`; returns their holders by name."""
  return dict(
      checkpoint=flags.DEFINE_string(
          'checkpoint', None, 'A training workdir (python -m vidjax.main), '
          'one checkpoint step (WORKDIR/checkpoints/N) or a python -m '
          'vidjax.convert output.', flag_values=fv),
      which=flags.DEFINE_enum(
          'which', 'latest', loader.WHICH, "A workdir's latest checkpoint, "
          "or its best (WORKDIR/best, kept when config.best_metric is set).",
          flag_values=fv),
      step=flags.DEFINE_integer(
          'step', None, "A workdir's checkpoint step (default: the newest).",
          lower_bound=0, flag_values=fv),
      config=config_flags.DEFINE_config_file(
          'config', None, 'The training config (configs/*.py), for a '
          'checkpoint saved without a preprocessing contract.',
          flag_values=fv, lock_config=True, sys_argv=list(argv)),
      fps=flags.DEFINE_string(
          'fps', None, 'Frames per second the training records were '
          "prepared at (contract field fps), or 'source': the videos' own "
          'rate.', flag_values=fv),
      short_side=flags.DEFINE_string(
          'short_side', None, 'Short side the training records were '
          "prepared at (contract field short_side), or 'source': as "
          'decoded.', flag_values=fv),
      jpeg_quality=flags.DEFINE_integer(
          'jpeg_quality', None, 'JPEG quality of the prepared frames '
          '(contract field jpeg_quality).', lower_bound=1, upper_bound=100,
          flag_values=fv),
      class_names_file=flags.DEFINE_string(
          'class_names_file', None, 'Class names, one per line (line i is '
          'class i), for a checkpoint saved without them.', flag_values=fv),
  )


def preparation_value(name: str, text: str | None):
  """--fps / --short_side: a positive number or 'source'; None if unset."""
  if text is None:
    return None
  if text.strip().lower() == contract_lib.SOURCE:
    return contract_lib.SOURCE
  kind = float if name == 'fps' else int
  try:
    value = kind(text)
  except ValueError:
    value = None
  if value is None or not value > 0 or value == float('inf'):
    raise VidjaxError(f'--{name}={text}: want a positive '
                      f'{"number" if name == "fps" else "integer"} or '
                      f"'{contract_lib.SOURCE}'")
  return value


def overrides(holders: dict) -> dict:
  """The contract fields the flags set."""
  out = {}
  for name in ('fps', 'short_side'):
    value = preparation_value(name, holders[name].value)
    if value is not None:
      out[name] = value
  if holders['jpeg_quality'].value is not None:
    out['jpeg_quality'] = holders['jpeg_quality'].value
  if holders['class_names_file'].value:
    out['class_names'] = loader.read_class_names(
        holders['class_names_file'].value)
  return out


def load(holders: dict) -> loader.Loaded:
  """The weights and contract the flags name."""
  path = holders['checkpoint'].value
  if not path:
    raise VidjaxError('give the weights with --checkpoint=DIR (a training '
                      'workdir, a checkpoint step or a python -m '
                      'vidjax.convert output)')
  config = None
  if holders['config'].present:
    from vidjax import cli  # pylint: disable=g-import-not-at-top
    config = cli.load_config(holders['config'])
  return loader.load(path, which=holders['which'].value,
                     step=holders['step'].value, config=config,
                     overrides=overrides(holders))
