"""Importing PyTorch checkpoints into vidjax models.

  model, variables = vidjax.convert.load_torch('s3d_torchvision', 's3d.pth')
  logits = model.apply(variables, video_nthwc, train=False)

`python -m vidjax.convert` writes a conversion as an orbax checkpoint that
`restore_converted` reads back. torch is imported only to read a checkpoint
file; a state dict of numpy arrays converts without it.
"""
import functools
import json
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import numpy as np
import orbax.checkpoint as ocp

from vidjax.convert import mapping
from vidjax.convert import output
from vidjax.convert.inflate import inflate_googlenet
from vidjax.convert import timesformer
from vidjax.convert import torch_resnet
from vidjax.convert import torchvision_s3d
from vidjax.errors import VidjaxError

__all__ = ['check_options', 'convertible_models', 'converted_options',
           'inflate_googlenet', 'load_torch', 'model_options',
           'read_state_dict', 'restore_converted', 'save_converted']

# vidjax model name → converter from a state dict to (model, variables);
# one with `reads_source` set gets the source itself and the overrides.
_CONVERTERS: dict[str, Callable[..., tuple[nn.Module, dict]]]
_CONVERTERS = {torchvision_s3d.MODEL_NAME: torchvision_s3d.convert}
# One converter for the whole ResNet family (tsn_r*, tsm_r*, tsm_online_r*):
# it reads the layout (torchvision, official TSM, mmaction2) off the keys.
_CONVERTERS.update({
    name: functools.partial(torch_resnet.convert, name=name)
    for name in torch_resnet.model_names()})
# The TimeSformer family (timesformer*): Hugging Face directories and state
# dicts, the official .pyth, ImageNet ViTs. These converters read the source
# themselves (`reads_source`) and take keyword overrides (num_heads, ...).
_CONVERTERS.update(timesformer.converters())
# Training scripts often save {'model': state_dict, 'optimizer': ...}.
_NESTED_KEYS = ('state_dict', 'model')
_DATA_PARALLEL_PREFIX = 'module.'
VARIABLES_DIR = output.VARIABLES_DIR
METADATA_FILE = output.METADATA_FILE


def convertible_models() -> list[str]:
  return sorted(_CONVERTERS)


def _check_name(name: str):
  if name not in _CONVERTERS:
    raise VidjaxError(f'no PyTorch converter for model {name!r}; '
                      f'convertible models: {", ".join(convertible_models())}')


def _read_torch_file(path: str) -> Any:
  if not os.path.isfile(path):
    raise VidjaxError(f'no such PyTorch checkpoint file: {path}')
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise VidjaxError('reading a PyTorch checkpoint needs torch '
                      '(pip install torch)') from None
  try:
    # weights_only: a checkpoint is data; never run its pickled code.
    return torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise VidjaxError(
        f'cannot read PyTorch checkpoint {path} (is it a file torch.save '
        f'wrote?): {type(e).__name__}: {first_line}') from None


def read_state_dict(source: Any) -> dict[str, Any]:
  """A flat {name: tensor} from a state dict or a torch checkpoint path.

  Accepts a bare state dict or one nested under 'state_dict' or 'model', and
  strips the 'module.' prefix that `nn.DataParallel` adds.
  """
  if isinstance(source, (str, os.PathLike)):
    source = _read_torch_file(os.fspath(source))
  if not isinstance(source, Mapping):
    raise VidjaxError('want a state dict (a mapping of names to tensors) or '
                      f'a checkpoint path, got {type(source).__name__}')
  for key in _NESTED_KEYS:
    if isinstance(source.get(key), Mapping):
      source = source[key]
      break
  state = dict(source)
  if not state:
    raise VidjaxError('the PyTorch state dict is empty')
  bad = [k for k, v in state.items()
         if not isinstance(k, str) or not hasattr(v, 'shape')]
  if bad:
    raise VidjaxError('not a state dict: entries without tensors: '
                      f'{", ".join(map(str, bad[:8]))}')
  if all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
    state = {k[len(_DATA_PARALLEL_PREFIX):]: v for k, v in state.items()}
  return state


def load_torch(name: str, source: Any, **overrides: Any
               ) -> tuple[nn.Module, dict]:
  """Converts a PyTorch checkpoint into vidjax model `name`.

  Args:
    name: the vidjax model the checkpoint is for (`convertible_models()`).
    source: a state dict (str → torch tensor or numpy array) or the path of
      a file `torch.save` wrote (a bare or nested state dict). TimeSformer
      models also take a Hugging Face model directory (config.json and
      weights), a .safetensors file and the official .pyth.
    **overrides: what the checkpoint cannot tell, for converters that take
      options (TimeSformer: num_heads, num_classes, ...; see
      vidjax/convert/timesformer/). Others take none.

  Returns:
    (model, variables): `model.apply(variables, video_nthwc, train=False)`
    gives the PyTorch model's eval-mode logits; variables are
    {'params', 'batch_stats'} of float32 numpy arrays ({'params'} alone for
    models without batch norm, such as TimeSformer).

  Raises:
    VidjaxError: unknown model, unreadable file, unknown or contradicted
      overrides, or a checkpoint whose tensors do not match the model one
      for one.
  """
  _check_name(name)
  converter = _CONVERTERS[name]
  if getattr(converter, 'reads_source', False):
    return converter(source, **overrides)
  if overrides:
    raise VidjaxError(f'the {name} converter takes no options; got '
                      f'{", ".join(sorted(overrides))}')
  return converter(read_state_dict(source))


def model_options(name: str, model: nn.Module) -> dict[str, Any]:
  """The attributes of converted `model` that `create_model(name)` lacks.

  A converter reads structure off the checkpoint (TSM's shift placement,
  temporal pooling, width); these must travel with the weights, because the
  same parameter shapes fit models that compute something else.
  """
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  spec = registry.get_spec(name)
  default = spec.create(model.num_classes)
  options = {}
  for option in spec.option_names:  # What a config can set back.
    value = getattr(model, option)
    if (isinstance(value, (bool, int, float, str)) and
        value != getattr(default, option)):
      options[option] = value
  return options


def save_converted(directory: str, name: str, num_classes: int,
                   variables: dict, *, options: Mapping[str, Any] | None = None,
                   contract=None, overwrite: bool = False) -> str:
  """Writes DIR/variables (orbax) and DIR/vidjax_model.json; returns DIR.

  All at once or not at all (`vidjax.convert.output`): with `overwrite`, an
  existing conversion in DIR is replaced only once the new one is complete,
  and kept as it was if writing fails. A DIR holding anything else is never
  replaced.

  `options`: model attributes the weights need beyond `name`'s defaults
  (`model_options`); `converted_options` reads them back.
  `contract`: the preprocessing contract (`vidjax.inference.contract`;
  `vidjax.convert.protocol.contract_for`), saved as the metadata's
  'contract' for `vidjax.inference.loader`. A conversion without one loads
  only with the config given again (--config).
  """
  metadata = {'model': name, 'num_classes': int(num_classes),
              'options': dict(options or {})}
  if contract is not None:
    metadata['contract'] = contract.to_dict()

  def write(tmp: str):
    with output.quiet_orbax(), ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, VARIABLES_DIR), variables)
      checkpointer.wait_until_finished()
    with open(os.path.join(tmp, METADATA_FILE), 'w') as f:
      json.dump(metadata, f, indent=2)
      f.flush()
      os.fsync(f.fileno())  # On disk before the swap makes it the output.

  return output.write_directory(directory, write, overwrite=overwrite)


def converted_options(directory: str) -> dict[str, Any]:
  """The model options `save_converted` recorded ({} for older outputs)."""
  try:
    with open(os.path.join(directory, METADATA_FILE)) as f:
      return dict(json.load(f).get('options') or {})
  except (OSError, ValueError, TypeError) as e:
    raise VidjaxError(f'not a converted vidjax checkpoint: cannot read '
                      f'{os.path.join(directory, METADATA_FILE)}: {e}') from None


def check_options(directory: str, model: nn.Module):
  """Raises VidjaxError when `model` differs from what DIR's weights need."""
  wrong = {k: v for k, v in converted_options(directory).items()
           if getattr(model, k, v) != v}
  if wrong:
    fixes = ' '.join(f'--config.model.{k}={v}' for k, v in wrong.items())
    raise VidjaxError(
        f'{directory} holds weights of a model with '
        + ', '.join(f'{k}={v!r}' for k, v in wrong.items())
        + ' but the config builds '
        + ', '.join(f'{k}={getattr(model, k)!r}' for k in wrong)
        + f'; pass {fixes}')


def restore_converted(directory: str) -> tuple[str, int, dict]:
  """(model name, num_classes, variables) that `save_converted` wrote.

  Variables come back as numpy arrays, like `load_torch`'s; build the model
  with `vidjax.models.create_model(name, num_classes=num_classes,
  **converted_options(directory))`.
  """
  directory = os.path.abspath(directory)
  meta_path = os.path.join(directory, METADATA_FILE)
  try:
    with open(meta_path) as f:
      meta = json.load(f)
    name, num_classes = meta['model'], int(meta['num_classes'])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise VidjaxError(f'not a converted vidjax checkpoint: cannot read '
                      f'{meta_path}: {e}') from None
  target = os.path.join(directory, VARIABLES_DIR)
  try:
    with output.quiet_orbax(), ocp.StandardCheckpointer() as checkpointer:
      # `save_converted` writes numpy arrays, and orbax restores them as
      # numpy without a template: on the host, with no device placement to
      # choose.
      variables = checkpointer.restore(target)
  except Exception as e:  # pylint: disable=broad-except
    # Missing, truncated or foreign files: orbax and tensorstore raise
    # whatever their layer meets (FileNotFoundError, ValueError, ...).
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise VidjaxError(f'not a converted vidjax checkpoint: {target} cannot '
                      f'be read ({type(e).__name__}: {first_line})') from e
  flat = {path: np.asarray(value)
          for path, value in mapping.flatten(variables).items()}
  return name, num_classes, mapping.unflatten(flat)
