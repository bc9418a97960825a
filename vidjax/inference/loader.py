"""One loader for every checkpoint vidjax writes: model, variables, contract.

  loaded = vidjax.inference.loader.load('workdirs/k400_s3dg')
  logits = loaded.model.apply(loaded.variables, clip, train=False)

A source is one of
  * a training workdir (`python -m vidjax.main`): its latest checkpoint in
    DIR/checkpoints, or with which='best' the one in DIR/best;
  * one checkpoint step: DIR/checkpoints/<step> or DIR/best/<step> (also
    on its own, copied elsewhere: a step carries its contract);
  * a `python -m vidjax.convert` output (DIR/vidjax_model.json).
Which one is told by the files present. Only the variables are read (never
the optimizer state), as host numpy arrays, whatever mesh wrote them.

The contract (`contract.Contract`) comes with the checkpoint: the trainer
saves it in every step's orbax metadata, a conversion in its
vidjax_model.json. For an older checkpoint it is rebuilt from the
workdir's config.json (or a `config` the caller gives), and what that
cannot tell (preparation fps and short side, class names) stays unknown
until `overrides` give it; tools call `Contract.require` for the fields
they need, which names the flag.
"""
from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import hashlib
import json
import os
from typing import Any

import flax
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib

CONTRACT_KEY = 'vidjax_contract'  # In a step's orbax custom metadata.
CHECKPOINTS = 'checkpoints'  # vidjax/train/checkpoint.py
BEST = 'best'
CONFIG_FILE = 'config.json'  # vidjax/train/workdir.py
CONVERTED_METADATA = 'vidjax_model.json'  # vidjax/convert/output.py
COLLECTIONS = ('params', 'batch_stats')
WHICH = ('latest', 'best')


@dataclasses.dataclass(frozen=True)
class Source:
  """Where weights were found.

  Attributes:
    path: the directory given (absolute).
    kind: 'workdir', 'step' or 'converted'.
    step_dir: the checkpoint step read (None for a conversion).
    step: its step number (None for a conversion).
    workdir: the training workdir it belongs to, if known.
  """
  path: str
  kind: str
  step_dir: str | None = None
  step: int | None = None
  workdir: str | None = None

  def describe(self) -> str:
    if self.kind == 'converted':
      return f'{self.path} (converted checkpoint)'
    where = self.workdir or os.path.dirname(os.path.dirname(self.step_dir))
    best = os.path.basename(os.path.dirname(self.step_dir)) == BEST
    return f'{where} ({"best checkpoint, " if best else ""}step {self.step})'


@dataclasses.dataclass
class Loaded:
  """A model ready to apply, with what its inputs and outputs mean."""
  model: nn.Module
  variables: dict  # {'params', 'batch_stats'}: numpy arrays.
  contract: contract_lib.Contract
  source: Source

  @property
  def fingerprint(self) -> str:
    """sha256 of the variables (names, dtypes, shapes, bytes), 16 hex digits.

    Equal fingerprints mean equal weights, wherever they were loaded from.
    """
    digest = hashlib.sha256()
    for path, value in sorted(flax.traverse_util.flatten_dict(
        self.variables, sep='/').items()):
      value = np.ascontiguousarray(value)
      digest.update(f'{path}|{value.dtype.str}|{value.shape}|'.encode())
      digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def _first_line(error: BaseException, limit: int = 300) -> str:
  text = str(error).strip()
  line = (text.splitlines()[0] if text else '') or type(error).__name__
  # orbax prints whole trees in its messages: one line must stay readable.
  return line if len(line) <= limit else line[:limit] + '...'


def _is_step_dir(path: str) -> bool:
  return (os.path.basename(path).isdigit() and os.path.isdir(path)
          and (os.path.exists(os.path.join(path, '_CHECKPOINT_METADATA'))
               or os.path.isdir(os.path.join(path, 'default'))))


def _steps_in(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if _is_step_dir(os.path.join(directory, n)))


def resolve(path: str, which: str = 'latest',
            step: int | None = None) -> Source:
  """What `path` is and which checkpoint step of it to read."""
  if which not in WHICH:
    raise VidjaxError(f'which={which!r}: want one of {", ".join(WHICH)}')
  path = os.path.abspath(os.path.expanduser(os.fspath(path)))
  if not os.path.exists(path):
    raise VidjaxError(f'checkpoint {path} does not exist')
  if not os.path.isdir(path):
    raise VidjaxError(f'checkpoint {path} is not a directory (want a '
                      'training workdir, a checkpoint step or a python -m '
                      'vidjax.convert output)')
  if os.path.exists(os.path.join(path, CONVERTED_METADATA)):
    if step is not None or which != 'latest':
      raise VidjaxError(f'{path} is a conversion: it has one set of '
                        'weights, no steps or best to choose')
    return Source(path, 'converted')
  if _is_step_dir(path):
    if step is not None and step != int(os.path.basename(path)):
      raise VidjaxError(f'{path} is checkpoint step '
                        f'{os.path.basename(path)}, not step {step}')
    parent = os.path.dirname(path)
    workdir = os.path.dirname(parent)
    workdir = workdir if os.path.exists(
        os.path.join(workdir, CONFIG_FILE)) else None
    return Source(path, 'step', path, int(os.path.basename(path)), workdir)
  if os.path.basename(path) in (CHECKPOINTS, BEST) and _steps_in(path):
    path = os.path.dirname(path)  # A workdir's checkpoints dir given.
  checkpoints = os.path.join(path, CHECKPOINTS)
  if not os.path.isdir(checkpoints):
    raise VidjaxError(
        f'{path} is neither a training workdir (no {CHECKPOINTS}/ inside), '
        f'a checkpoint step, nor a python -m vidjax.convert output (no '
        f'{CONVERTED_METADATA})')
  directory = os.path.join(path, BEST if which == 'best' else CHECKPOINTS)
  steps = _steps_in(directory)
  if not steps:
    what = ('no best checkpoint (set config.best_metric and '
            'config.eval_every_steps when training)' if which == 'best'
            else 'no checkpoint yet (has training saved one?)')
    raise VidjaxError(f'{path} has {what}')
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise VidjaxError(f'{directory} has no step {step}; steps: '
                      f'{", ".join(map(str, steps))}')
  return Source(path, 'workdir', os.path.join(directory, str(step)), step,
                path)


# ------------------------------------------------------------- Reading.


def _manager(directory: str):
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  return ocp.CheckpointManager(
      directory, options=ocp.CheckpointManagerOptions(
          create=False, read_only=True),
      # The trainer saves with StandardSave; its PyTree handler reads a
      # subtree of it (partial_restore) as host numpy arrays.
      item_handlers=ocp.PyTreeCheckpointHandler())


def _read_step(source: Source) -> tuple[dict, dict | None]:
  """({'params', 'batch_stats'} numpy, the saved contract dict or None)."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  where = source.describe()
  try:
    manager = _manager(os.path.dirname(source.step_dir))
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(f'cannot read {where}: {_first_line(e)}') from None
  try:
    try:
      tree = manager.item_metadata(source.step)
      tree = getattr(tree, 'tree', tree)
      custom = manager.metadata(source.step).custom_metadata or {}
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot read the metadata of {where} '
                        f'({source.step_dir}): {_first_line(e)}') from None
    if not isinstance(tree, Mapping) or 'params' not in tree:
      raise VidjaxError(f'{source.step_dir} is not a vidjax training '
                        'checkpoint (no params)')
    wanted = {k: tree[k] for k in COLLECTIONS if tree.get(k)}
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    try:
      restored = manager.restore(source.step, args=ocp.args.PyTreeRestore(
          wanted, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot restore {where} ({source.step_dir}): '
                        f'{_first_line(e)}') from None
  finally:
    manager.close()
  variables = {k: jax.tree.map(np.asarray, dict(restored.get(k) or {}))
               for k in COLLECTIONS}
  return variables, custom.get(CONTRACT_KEY)


def _read_json(path: str) -> dict | None:
  try:
    with open(path) as f:
      payload = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise VidjaxError(f'cannot read {path}: {e}') from None
  return payload if isinstance(payload, dict) else None


def _config_from_dict(payload: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A workdir's config.json over the defaults (keys it lacks keep them)."""
  from vidjax import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.default_config()
  with config.unlocked():
    config.model_name = payload.get('model_name', config.model_name)
    config.model = ml_collections.ConfigDict(payload.get('model') or {})
    for key, value in (payload.get('data') or {}).items():
      if key in config.data:
        config.data[key] = tuple(value) if isinstance(value, list) else value
  return config


def _num_classes(variables: dict, model_name: str) -> int:
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  head = registry.get_spec(model_name).head
  kernel = variables.get('params', {}).get(head, {}).get('kernel')
  if kernel is None:
    raise VidjaxError(f'the weights have no classifier {head!r} for model '
                      f'{model_name!r}')
  return int(np.shape(kernel)[-1])


def _rebuilt_contract(config, variables, where: str
                      ) -> contract_lib.Contract:
  if config is None:
    raise VidjaxError(
        f'{where} carries no preprocessing contract (written before vidjax '
        f'saved one) and no config.json beside it; give the training config '
        f'with {contract_lib.CONFIG_FLAG}=CONFIG.py')
  return contract_lib.from_config(
      config, num_classes=_num_classes(variables, config.model_name),
      class_names=None)


def _with_overrides(contract, overrides, where):
  if not overrides:
    return contract
  unknown = sorted(set(overrides) - {
      f.name for f in dataclasses.fields(contract_lib.Contract)})
  if unknown:
    raise VidjaxError(f'unknown contract fields {", ".join(unknown)}')
  changes = dict(overrides)
  if changes.get('class_names') is not None:
    changes['class_names'] = tuple(changes['class_names'])
  contract = contract.replace(**changes)
  contract_lib.Contract.from_dict(contract.to_dict(), where)  # Re-checks.
  return contract


def load(path: str, *, which: str = 'latest', step: int | None = None,
         config: ml_collections.ConfigDict | None = None,
         overrides: Mapping[str, Any] | None = None) -> Loaded:
  """The model, variables and contract in `path` (see the module docstring).

  Args:
    path: a training workdir, a checkpoint step dir or a conversion.
    which: a workdir's 'latest' or 'best' checkpoint.
    step: a workdir's checkpoint step (default: the newest).
    config: the training config, for a checkpoint that carries no contract
      (else the workdir's config.json is used).
    overrides: contract fields to set (fps, short_side, class_names, ...),
      over what the checkpoint says.

  Raises:
    VidjaxError: anything missing, damaged or inconsistent, in one line.
  """
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  source = resolve(path, which, step)
  where = source.describe()
  if source.kind == 'converted':
    from vidjax import convert  # pylint: disable=g-import-not-at-top
    name, num_classes, variables = convert.restore_converted(source.path)
    variables = {k: variables.get(k, {}) for k in COLLECTIONS}
    meta = _read_json(os.path.join(source.path, CONVERTED_METADATA)) or {}
    saved = meta.get('contract')
    if saved is not None:
      contract = contract_lib.Contract.from_dict(saved, where)
    elif config is not None:
      contract = contract_lib.from_config(config, num_classes=num_classes,
                                          class_names=None)
    else:
      raise VidjaxError(
          f'{where} carries no preprocessing contract (converted before '
          f'vidjax saved one): convert it again with python -m vidjax.convert '
          f'... --config=CONFIG.py, or give the config with '
          f'{contract_lib.CONFIG_FLAG}=CONFIG.py')
    options = dict(meta.get('options') or {})
    contract = contract.replace(
        model_options={**contract.model_options, **options})
    if contract.model_name != name:
      raise VidjaxError(f'{where} holds {name!r} weights but its contract '
                        f'(or --config) names model {contract.model_name!r}')
  else:
    variables, saved = _read_step(source)
    if saved is not None and config is None:
      contract = contract_lib.Contract.from_dict(saved, where)
    else:
      if config is None and source.workdir:
        payload = _read_json(os.path.join(source.workdir, CONFIG_FILE))
        config = _config_from_dict(payload) if payload else None
      contract = _rebuilt_contract(config, variables, where)
      if saved is not None:  # A config given: the saved names still hold.
        saved_contract = contract_lib.Contract.from_dict(saved, where)
        contract = contract.replace(
            class_names=contract.class_names or saved_contract.class_names)
  contract = _with_overrides(contract, overrides, where)
  model = _build_model(contract, where)
  _check_fits(model, variables, where, contract)
  return Loaded(model, variables, contract, source)


def _build_model(contract, where: str) -> nn.Module:
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  try:
    spec = registry.get_spec(contract.model_name)
    options = {k: v for k, v in contract.model_options.items()
               if k in spec.option_names}
    return spec.create(contract.num_classes, **options)
  except VidjaxError as e:
    raise VidjaxError(f'{where}: {e}') from None


def _check_fits(model, variables, where, contract):
  """Raises one VidjaxError unless the variables fill `model` exactly."""
  clip = jax.ShapeDtypeStruct(
      (1, contract.num_frames, contract.crop_size, contract.crop_size, 3),
      np.float32)
  try:
    abstract = nn.unbox(jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), clip))
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(f'{where}: model {contract.model_name!r} cannot take '
                      f'{contract.num_frames}x{contract.crop_size}^2 clips: '
                      f'{_first_line(e)}') from None
  want = {p: tuple(v.shape) for p, v in flax.traverse_util.flatten_dict(
      {k: abstract.get(k, {}) for k in COLLECTIONS}, sep='/').items()}
  have = {p: tuple(np.shape(v)) for p, v in flax.traverse_util.flatten_dict(
      {k: variables.get(k, {}) for k in COLLECTIONS}, sep='/').items()}
  if want == have:
    return
  missing = sorted(set(want) - set(have))
  unused = sorted(set(have) - set(want))
  shapes = [f'{p} {list(have[p])} (wants {list(s)})'
            for p, s in want.items() if p in have and have[p] != s]
  problems = [f'{what}: {", ".join(names[:4])}'
              + (f' (+{len(names) - 4} more)' if len(names) > 4 else '')
              for what, names in (('missing', missing), ('unused', unused),
                                  ('other shapes', shapes)) if names]
  raise VidjaxError(f'{where} does not fit model {contract.model_name!r} '
                    f'with options {dict(contract.model_options)}: '
                    + '; '.join(problems))
