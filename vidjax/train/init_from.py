"""Start a run from other weights (`--config.init_from=DIR`).

DIR is anything `vidjax.inference.loader` reads: a `python -m
vidjax.convert` output, a trained workdir (its latest checkpoint, e.g.
Kinetics weights to fine-tune on SSv2) or one checkpoint step. Every
parameter and BN statistic is taken from it, except the classifier when
the class count differs: fine-tuning on a new dataset keeps the fresh head,
as PySlowFast's and MMAction2's loaders do when a checkpoint's head does
not fit. Anything else that does not fit is an error, never a silent
re-initialisation. Only the weights are read: the optimizer state starts
over, and the checkpoint's preprocessing contract is not needed.
"""
from __future__ import annotations

from typing import Any

import flax
import numpy as np

from vidjax.errors import VidjaxError


def _is_head(path: tuple[str, ...], head: str) -> bool:
  # path is (collection, module, ...): the classifier sits at the top.
  return len(path) > 1 and path[1] == head


def merge(fresh: dict[str, Any], loaded: dict[str, Any], source: str, *,
          head: str) -> tuple[dict[str, Any], list[str]]:
  """Overlays `loaded` variables on `fresh` ones (both {'params', ...}).

  `head` is the classifier module's name (the model's registry spec).

  Returns:
    The merged variables and the '/'-joined names kept from `fresh`.

  Raises:
    VidjaxError: a non-head variable is missing from `loaded` or has another
      shape, or `loaded` has variables the model does not.
  """
  fresh_flat = flax.traverse_util.flatten_dict(fresh)
  loaded_flat = flax.traverse_util.flatten_dict(loaded)
  merged, kept_fresh, problems = {}, [], []
  for path, value in fresh_flat.items():
    name = '/'.join(path)
    other = loaded_flat.get(path)
    if other is not None and tuple(other.shape) == tuple(value.shape):
      merged[path] = np.asarray(other, dtype=value.dtype)
    elif _is_head(path, head):
      merged[path] = value
      kept_fresh.append(name)
    elif other is None:
      problems.append(f'{name} missing')
    else:
      problems.append(f'{name} has shape {list(other.shape)}, model wants '
                      f'{list(value.shape)}')
  unused = sorted('/'.join(p) for p in loaded_flat if p not in fresh_flat)
  problems += [f'{name} unused' for name in unused]
  if problems:
    raise VidjaxError(f'init_from {source} does not fit the model: '
                      + '; '.join(problems[:8])
                      + (f' (+{len(problems) - 8} more)'
                         if len(problems) > 8 else ''))
  return flax.traverse_util.unflatten_dict(merged), kept_fresh


def load(directory: str, model_name: str, fresh: dict[str, Any],
         model=None):
  """Reads DIR (see the module docstring) and merges it into `fresh`.

  With `model`, also checks that it has the structure a conversion's
  weights were converted with (e.g. TSM's placement): equal shapes do not
  imply that.
  """
  # Imported here: only runs that fine-tune need orbax's restore path.
  from vidjax.inference import loader  # pylint: disable=g-import-not-at-top
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  try:
    weights = loader.read(directory)
  except VidjaxError as e:
    raise VidjaxError(f'init_from: {e}') from None
  source = weights.source.describe()
  if weights.model_name is not None and weights.model_name != model_name:
    raise VidjaxError(f'init_from {source} holds {weights.model_name!r} '
                      f'weights but config.model_name is {model_name!r}')
  if model is not None and weights.source.kind == 'converted':
    from vidjax import convert  # pylint: disable=g-import-not-at-top
    convert.check_options(weights.source.path, model)
  return merge(fresh, weights.variables, source,
               head=registry.get_spec(model_name).head)
