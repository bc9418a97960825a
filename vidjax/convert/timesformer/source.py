"""Reading a TimeSformer or ViT source: a directory, a file or a state dict.

`read_source` returns a `SourceCheckpoint`: the flat tensors (after
`convert.read_state_dict` has unnested 'state_dict' / 'model' and stripped
DataParallel's 'module.') and, for a Hugging Face directory, its
config.json. Files may be `torch.save` output, the official `.pyth` or
`.safetensors`; a Hugging Face directory may hold sharded weights.
"""
import dataclasses
import json
import os
from typing import Any, Mapping

from vidjax.convert.timesformer import official
from vidjax.errors import VidjaxError

CONFIG_FILE = 'config.json'
# Weight files of a Hugging Face directory, in the order transformers tries.
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json',
                 'pytorch_model.bin', 'pytorch_model.bin.index.json')


@dataclasses.dataclass(frozen=True)
class SourceCheckpoint:
  """A source's tensors and what came with them.

  Attributes:
    state: flat {key: tensor}.
    config: a Hugging Face config.json's contents, or None.
    where: the source, for messages.
    wrapped: came as an official {'model_state': ...} (a TimeSformer, not a
      ViT, whatever its keys).
  """
  state: Mapping[str, Any]
  config: Mapping[str, Any] | None
  where: str
  wrapped: bool = False


def read_source(source: Any) -> SourceCheckpoint:
  """The tensors (and any config.json) of a directory, file or state dict."""
  where = 'state dict'
  if isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    where = path
    if os.path.isdir(path):
      return _read_directory(path)
    if not os.path.isfile(path):
      raise VidjaxError(f'no such checkpoint file or directory: {path}')
    source = _read_weights_file(path)
  wrapped = (isinstance(source, Mapping) and
             isinstance(source.get(official.WRAPPER), Mapping))
  if wrapped:  # PySlowFast's checkpoint: epoch, optimizer_state, cfg, ...
    source = source[official.WRAPPER]
  return SourceCheckpoint(_flat_state(source), None, where, wrapped)


def _flat_state(source: Any) -> dict[str, Any]:
  from vidjax import convert  # pylint: disable=g-import-not-at-top
  return convert.read_state_dict(source)


def _read_safetensors(path: str) -> dict[str, Any]:
  try:
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise VidjaxError('reading a .safetensors file needs safetensors '
                      '(pip install safetensors)') from None
  try:
    return dict(safetensors.numpy.load_file(path))
  except (TypeError, ValueError):
    # numpy has no bfloat16: read through torch, which `to_numpy` widens.
    try:
      import safetensors.torch  # pylint: disable=g-import-not-at-top
      return dict(safetensors.torch.load_file(path))
    except ImportError:
      raise VidjaxError(f'{path} holds tensors numpy cannot hold (bfloat16?);'
                        ' reading it needs torch') from None
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(f'cannot read {path}: {type(e).__name__}: {e}') from None


def _read_weights_file(path: str) -> dict[str, Any]:
  from vidjax import convert  # pylint: disable=g-import-not-at-top
  if path.endswith('.safetensors'):
    return _read_safetensors(path)
  return convert._read_torch_file(path)  # pylint: disable=protected-access


def _read_directory(directory: str) -> SourceCheckpoint:
  config_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(config_path):
    raise VidjaxError(
        f'{directory} is a directory without {CONFIG_FILE}: a Hugging Face '
        f'model directory holds {CONFIG_FILE} and model.safetensors or '
        'pytorch_model.bin (save_pretrained writes both); to convert a bare '
        'state dict, pass its file and the hyper-parameters it lacks '
        '(num_heads=...)')
  try:
    with open(config_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise VidjaxError(f'cannot read {config_path}: {e}') from None
  if not isinstance(config, dict):
    raise VidjaxError(f'{config_path} is not a JSON object')
  weights = next((f for f in _WEIGHT_FILES
                  if os.path.isfile(os.path.join(directory, f))), None)
  if weights is None:
    raise VidjaxError(f'{directory} has {CONFIG_FILE} but no weights: none '
                      f'of {", ".join(_WEIGHT_FILES)}')
  path = os.path.join(directory, weights)
  if weights.endswith('.index.json'):
    try:
      with open(path) as f:
        shards = sorted(set(json.load(f)['weight_map'].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
      raise VidjaxError(f'cannot read the shard index {path}: {e}') from None
    state = {}
    for shard in shards:
      state.update(_read_weights_file(os.path.join(directory, shard)))
  else:
    state = _read_weights_file(path)
  return SourceCheckpoint(_flat_state(state), config, directory)
