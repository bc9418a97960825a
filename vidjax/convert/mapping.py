"""Strict assignment of named source tensors to a model's variables.

A converter lists `Rule`s (source key → target path, plus a layout
transform) and `assign` applies them with bookkeeping: every target variable
must be filled exactly once, every source tensor must be used (bar the ones a
converter chooses to ignore), and every shape must match. All problems are
collected and reported together in one `VidjaxError`, because a checkpoint
that converts partially would produce a model that runs but predicts garbage.
"""
import dataclasses
from typing import Any, Callable, Iterable, Mapping

from flax import traverse_util
import numpy as np

from vidjax.errors import VidjaxError

Path = tuple[str, ...]
# Names listed per problem in an error message; the rest are counted.
_MAX_LISTED = 8


def _identity(x: np.ndarray) -> np.ndarray:
  return x


@dataclasses.dataclass(frozen=True)
class Rule:
  """Fill target variable `target` from source tensor `source`.

  Attributes:
    source: key in the source state dict, e.g. 'features.0.0.0.weight'.
    target: path in the variables tree, e.g. ('params', 'Logits', 'bias').
    transform: maps the source array to the target layout; raises ValueError
      when the source array has the wrong rank or shape for it.
  """
  source: str
  target: Path
  transform: Callable[[np.ndarray], np.ndarray] = _identity


def to_numpy(value: Any) -> np.ndarray:
  """A float32 numpy copy of a numpy array or torch tensor.

  Torch tensors are recognised by duck typing so that this module never
  imports torch; `.float()` first because numpy has no bfloat16.
  """
  if hasattr(value, 'detach') and hasattr(value, 'cpu'):
    value = value.detach().cpu()
    if value.is_floating_point():
      value = value.float()
    value = value.numpy()
  return np.array(value, dtype=np.float32)


# The one flattener of variable trees (issue 28): flax's, under the names
# the converters use. Paths are tuples of keys; empty subtrees are dropped.
flatten = traverse_util.flatten_dict
unflatten = traverse_util.unflatten_dict


def _listing(what: str, names: list[str]) -> str:
  shown = ', '.join(names[:_MAX_LISTED])
  more = len(names) - _MAX_LISTED
  return (f'{len(names)} {what}: {shown}' +
          (f' (and {more} more)' if more > 0 else ''))


def assign(sources: Mapping[str, Any], targets: Mapping[Path, Any],
           rules: Iterable[Rule], *,
           ignore: Callable[[str], bool] = lambda key: False,
           description: str = 'checkpoint') -> dict[Path, np.ndarray]:
  """Applies `rules`, checking that they account for everything.

  Args:
    sources: source tensors by key (numpy arrays or torch tensors).
    targets: the variables to fill, by path; values need only a `.shape`
      (e.g. `jax.ShapeDtypeStruct` from `jax.eval_shape`).
    rules: one per target variable.
    ignore: source keys that carry no weights (e.g. BN step counters).
    description: what is being converted, for error messages.

  Returns:
    {target path: float32 numpy array} covering every target.

  Raises:
    VidjaxError: naming missing, unused and misshapen tensors and unfilled
      variables, if there are any.
  """
  rules = list(rules)
  filled: dict[Path, np.ndarray] = {}
  used: set[str] = set()
  missing, misshapen, unknown_targets = [], [], []
  for rule in rules:
    name = '/'.join(rule.target)
    if rule.target not in targets or rule.target in filled:
      # A converter bug (or a model whose structure drifted), not bad input;
      # reported with the rest so the message shows the whole picture.
      unknown_targets.append(name)
      continue
    if rule.source not in sources:
      missing.append(rule.source)
      continue
    used.add(rule.source)
    array = to_numpy(sources[rule.source])
    want = tuple(targets[rule.target].shape)
    try:
      value = rule.transform(array)
    except (ValueError, IndexError):
      value = None
    if value is None or tuple(value.shape) != want:
      misshapen.append(f'{rule.source} {list(array.shape)} for {name} '
                       f'{list(want)}')
      continue
    filled[rule.target] = np.ascontiguousarray(value, dtype=np.float32)

  unused = [key for key in sources if key not in used and not ignore(key)]
  # Targets whose rule failed are already reported as missing or misshapen.
  attempted = {rule.target for rule in rules}
  unfilled = ['/'.join(path) for path in targets
              if path not in filled and path not in attempted]
  problems = []
  if missing:
    problems.append(_listing('missing tensor(s)', missing))
  if unused:
    problems.append(_listing('unexpected tensor(s)', unused))
  if misshapen:
    problems.append(_listing('shape mismatch(es)', misshapen))
  if unfilled:
    problems.append(_listing('model variable(s) no tensor maps to',
                             unfilled))
  if unknown_targets:
    problems.append(_listing('conversion rule(s) for unknown or repeated '
                             'model variables', unknown_targets))
  if problems:
    raise VidjaxError(f'cannot convert {description}: ' + '; '.join(problems))
  return filled


def classifier_size(state: Mapping[str, Any], key: str, ndim: int,
                    source: str) -> int:
  """The class count: dim 0 of the `ndim`-D classifier weight `state[key]`.

  Raises:
    VidjaxError: naming `source` when the key is absent (not that kind of
      checkpoint) or the weight has another rank.
  """
  if key not in state:
    raise VidjaxError(
        f'not a {source} state dict: it has no {key} '
        f'(first keys: {", ".join(list(state)[:5]) or "none"})')
  shape = tuple(state[key].shape)
  if len(shape) != ndim:
    raise VidjaxError(f'{key} has shape {list(shape)}; a {source} has a '
                      f'{ndim}-D classifier weight there')
  return int(shape[0])
