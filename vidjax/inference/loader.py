"""One loader for every checkpoint vidjax writes: model, variables, contract.

  loaded = vidjax.inference.loader.load('workdirs/k400_s3dg')
  logits = loaded.model.apply(loaded.variables, clip, train=False)

A source is one of
  * a training workdir (`python -m vidjax.main`): its latest checkpoint in
    DIR/checkpoints, or with which='best' the one in DIR/best;
  * one checkpoint step: DIR/checkpoints/<step> or DIR/best/<step> (also
    on its own, copied elsewhere under any name: a step carries its
    contract);
  * a `python -m vidjax.convert` output (DIR/vidjax_model.json).
Which one is told by the files present. Only the variables are read (never
the optimizer state), as host numpy arrays, whatever mesh wrote them.
`read` stops there (for `init_from`, which brings its own model); `load`
also builds the model and checks that the variables fill it exactly.

The contract (`contract.Contract`) comes with the checkpoint: the trainer
saves it in every step's orbax metadata, a conversion in its
vidjax_model.json. For an older checkpoint it is rebuilt from the
workdir's config.json (or a `config` the caller gives, which also replaces
a saved contract's clip settings), and what that cannot tell (preparation
fps and short side, class names) stays unknown until `overrides` give it;
tools call `Contract.require` for the fields they need, which names the
flag (--fps, --short_side, --jpeg_quality, --class_names_file; --config
for a checkpoint with neither contract nor config.json).
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
ITEM = 'default'  # A step's one item (the TrainState), orbax's default name.
STEP_METADATA = '_CHECKPOINT_METADATA'  # orbax: the step's custom metadata.
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
    if self.workdir is None:
      return (f'checkpoint step {self.step_dir}'
              + (f' (step {self.step})' if self.step is not None else ''))
    best = os.path.basename(os.path.dirname(self.step_dir)) == BEST
    return (f'{self.workdir} ({"best checkpoint, " if best else ""}'
            f'step {self.step})')


@dataclasses.dataclass
class Weights:
  """What a checkpoint holds, before a model is built (`read`).

  Attributes:
    source: where it was found.
    variables: {'params', 'batch_stats'} of numpy arrays.
    model_name: the model they were saved for (None: not recorded).
    model_options: its options (config.model, or a conversion's
      structural options).
    contract: the saved preprocessing contract as a dict (None: saved
      before vidjax wrote one).
    config: a trainer workdir's config.json (None if absent).
  """
  source: Source
  variables: dict
  model_name: str | None
  model_options: dict
  contract: dict | None
  config: dict | None = None


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
  """An orbax step of the trainer: by its files, whatever its name (a step
  copied elsewhere may be renamed)."""
  return (os.path.isdir(path) and os.path.isdir(os.path.join(path, ITEM))
          and os.path.exists(os.path.join(path, STEP_METADATA)))


def _steps_in(directory: str) -> list[int]:
  if not os.path.isdir(directory):
    return []
  return sorted(int(n) for n in os.listdir(directory)
                if n.isdigit() and _is_step_dir(os.path.join(directory, n)))


def resolve(path: str, which: str = 'latest',
            step: int | None = None) -> Source:
  """What `path` is and which checkpoint step of it to read (no reads)."""
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
                        'weights, no steps or best to choose (drop --step '
                        'and --which)')
    return Source(path, 'converted')
  if _is_step_dir(path):
    name = os.path.basename(path)
    number = int(name) if name.isdigit() else None
    if step is not None and step != number:
      raise VidjaxError(f'{path} is one checkpoint step ({name}), not step '
                        f'{step}; give its workdir to choose a step')
    if which != 'latest':
      raise VidjaxError(f'{path} is one checkpoint step: --which={which} '
                        'chooses among a workdir\'s checkpoints; give the '
                        'workdir')
    workdir = os.path.dirname(os.path.dirname(path))
    if (os.path.basename(os.path.dirname(path)) not in (CHECKPOINTS, BEST)
        or not os.path.exists(os.path.join(workdir, CONFIG_FILE))):
      workdir = None  # A step on its own: it carries its contract.
    return Source(path, 'step', path, number, workdir)
  if os.path.basename(path) in (CHECKPOINTS, BEST) and os.path.isdir(
      os.path.join(os.path.dirname(path), CHECKPOINTS)):
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
    what = ('no best checkpoint (it is kept when training sets '
            'config.best_metric and config.eval_every_steps); use '
            '--which=latest' if which == 'best'
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


def _read_json(path: str, what: str) -> dict | None:
  """The JSON object in `path`; None if there is no such file."""
  try:
    with open(path) as f:
      payload = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError) as e:
    raise VidjaxError(f'cannot read {what} {path}: {e}') from None
  if not isinstance(payload, dict):
    raise VidjaxError(f'cannot read {what} {path}: not a JSON object')
  return payload


def _other_steps(source: Source) -> str:
  """'; choose another with --step (steps: 10, 20)' for a workdir's step."""
  if source.kind != 'workdir':
    return ''
  others = [s for s in _steps_in(os.path.dirname(source.step_dir))
            if s != source.step]
  if not others:
    return ''
  return (f'; choose another with --step (steps: '
          f'{", ".join(map(str, others))})')


def _step_metadata(source: Source) -> dict:
  """The step's custom metadata (where the trainer saves the contract)."""
  where = source.describe()
  payload = _read_json(os.path.join(source.step_dir, STEP_METADATA),
                       f'the metadata of {where}:')
  if payload is None:
    raise VidjaxError(f'{where} is damaged: {STEP_METADATA} is missing'
                      + _other_steps(source))
  custom = payload.get('custom_metadata') or {}
  return custom if isinstance(custom, dict) else {}


def _read_step(source: Source) -> tuple[dict, dict | None]:
  """({'params', 'batch_stats'} numpy, the saved contract dict or None).

  Reads the step's item directly (no CheckpointManager: a step copied on
  its own has no steps beside it), only the variables, as host numpy
  arrays whatever mesh wrote them.
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top
  where = source.describe()
  custom = _step_metadata(source)
  item = epath.Path(source.step_dir) / ITEM
  handler = ocp.PyTreeCheckpointHandler()
  try:
    try:
      tree = handler.metadata(item)
      tree = getattr(tree, 'tree', tree)
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot read {where} ({source.step_dir}): '
                        f'{_first_line(e)}'
                        + _other_steps(source)) from None
    if not isinstance(tree, Mapping) or 'params' not in tree:
      raise VidjaxError(f'{source.step_dir} is not a vidjax training '
                        'checkpoint (no params)')
    wanted = {k: tree[k] for k in COLLECTIONS if tree.get(k)}
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    try:
      restored = handler.restore(item, args=ocp.args.PyTreeRestore(
          wanted, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot read {where} ({source.step_dir}): '
                        f'{_first_line(e)}' + _other_steps(source)) from None
  finally:
    handler.close()
  variables = {k: jax.tree.map(np.asarray, dict(restored.get(k) or {}))
               for k in COLLECTIONS}
  return variables, custom.get(CONTRACT_KEY)


def _converted(source: Source) -> Weights:
  from vidjax import convert  # pylint: disable=g-import-not-at-top
  name, _, variables = convert.restore_converted(source.path)
  meta = _read_json(os.path.join(source.path, CONVERTED_METADATA),
                    'the conversion metadata') or {}
  return Weights(source, {k: variables.get(k, {}) for k in COLLECTIONS},
                 name, dict(meta.get('options') or {}), meta.get('contract'))


def read(path: str, *, which: str = 'latest',
         step: int | None = None) -> Weights:
  """The variables in `path` and what they were saved with; no model built.

  For callers that bring their own model (`init_from`); `load` builds one.
  """
  source = resolve(path, which, step)
  if source.kind == 'converted':
    return _converted(source)
  variables, saved = _read_step(source)
  config = None
  if source.workdir:
    config = _read_json(os.path.join(source.workdir, CONFIG_FILE),
                        'the workdir config')
  if isinstance(saved, Mapping):
    name, options = saved.get('model_name'), saved.get('model_options')
  else:
    name, options = (config or {}).get('model_name'), (config or {}).get(
        'model')
  return Weights(source, variables, name if isinstance(name, str) else None,
                 dict(options or {}), saved, config)


def model_name_of(source: Source) -> str | None:
  """The model `source`'s weights were saved for, from its small metadata
  files only (for checks that answer before anything is read or built)."""
  if source.kind == 'converted':
    path = os.path.join(source.path, CONVERTED_METADATA)
    try:
      with open(path) as f:
        return json.load(f)['model']
    except (OSError, ValueError, KeyError, TypeError) as e:
      raise VidjaxError(f'not a converted vidjax checkpoint: cannot read '
                        f'{path}: {e}') from None
  saved = _step_metadata(source).get(CONTRACT_KEY)
  if isinstance(saved, Mapping) and saved.get('model_name'):
    return saved['model_name']
  if source.workdir:
    config = _read_json(os.path.join(source.workdir, CONFIG_FILE),
                        'the workdir config')
    return (config or {}).get('model_name')
  return None


# ----------------------------------------------------------- Contract.


def read_class_names(path: str, flag: str = '--class_names_file'
                     ) -> tuple[str, ...]:
  """One name per line (line i is class i); `flag` names where it came from."""
  try:
    with open(os.path.expanduser(path)) as f:
      names = [line.strip() for line in f]
  except OSError as e:
    raise VidjaxError(f'cannot read {flag} {path}: '
                      f'{e.strerror or e}') from None
  while names and not names[-1]:
    names.pop()
  if not names or not all(names):
    raise VidjaxError(f'{flag} {path}: want one non-empty name per line')
  return tuple(names)


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


def _num_classes(variables: dict, model_name: str, where: str) -> int:
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  try:
    head = registry.get_spec(model_name).head
  except VidjaxError as e:
    raise VidjaxError(f'{where}: {e}') from None
  kernel = variables.get('params', {}).get(head, {}).get('kernel')
  if kernel is None:
    raise VidjaxError(f'{where}: the weights have no classifier {head!r} '
                      f'of model {model_name!r}')
  return int(np.shape(kernel)[-1])


def _contract(weights: Weights, config, where: str) -> contract_lib.Contract:
  """The saved contract; else one rebuilt from `config` or config.json.

  A given `config` replaces the saved clip settings (a checkpoint evaluated
  another way, at the user's word); the saved class names and preparation
  facts still hold unless the config knows better.
  """
  saved = None
  if weights.contract is not None:
    saved = contract_lib.Contract.from_dict(weights.contract, where)
    if config is None:
      return saved
  if config is None and weights.config:
    config = _config_from_dict(weights.config)
  if config is None:
    how = ('convert it again with python -m vidjax.convert ... '
           '--config=CONFIG.py, or give'
           if weights.source.kind == 'converted' else 'give')
    raise VidjaxError(
        f'{where} carries no preprocessing contract (saved before vidjax '
        f'wrote one) and no config.json beside it: {how} the training config '
        f'with {contract_lib.CONFIG_FLAG}=CONFIG.py')
  if weights.model_name and config.model_name != weights.model_name:
    raise VidjaxError(f'{where} holds {weights.model_name!r} weights but '
                      f'the config names model {config.model_name!r}')
  names = saved.class_names if saved else None
  if names is None and config.data.get('class_names_file'):
    names = read_class_names(config.data.class_names_file,
                             'config.data.class_names_file')
  contract = contract_lib.from_config(
      config, num_classes=_num_classes(weights.variables, config.model_name,
                                       where),
      class_names=names,
      preparation={k: getattr(saved, k) for k in contract_lib.FLAGS
                   if k != 'class_names'} if saved else None)
  if weights.source.kind == 'converted':
    # The converter's structural options (TSM's placement, ...) hold
    # whatever the config says.
    contract = contract.replace(model_options={
        **contract.model_options, **weights.model_options})
  return contract


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
      (else the workdir's config.json is used); given for one that does,
      its clip settings replace the saved ones.
    overrides: contract fields to set (fps, short_side, class_names, ...),
      over what the checkpoint says.

  Raises:
    VidjaxError: anything missing, damaged or inconsistent, in one line.
  """
  weights = read(path, which=which, step=step)
  where = weights.source.describe()
  contract = _contract(weights, config, where)
  contract = _with_overrides(contract, overrides, where)
  if weights.model_name and contract.model_name != weights.model_name:
    raise VidjaxError(f'{where} holds {weights.model_name!r} weights but its '
                      f'contract names model {contract.model_name!r}')
  model = _build_model(contract, where)
  _check_fits(model, weights.variables, where, contract)
  return Loaded(model, weights.variables, contract, weights.source)


def _build_model(contract, where: str) -> nn.Module:
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  try:
    spec = registry.get_spec(contract.model_name)
    options = {k: v for k, v in contract.model_options.items()
               if k in spec.option_names}
    return spec.create(contract.num_classes, **options)
  except VidjaxError as e:
    raise VidjaxError(f'{where}: {e}') from None


# (repr(model), clip shape) -> {name: shape} of its variables: tracing a
# model's init takes seconds, and a process often loads one model again.
_SHAPES: dict[tuple[str, tuple[int, ...]], dict[str, tuple[int, ...]]] = {}


def _variable_shapes(model, shape) -> dict[str, tuple[int, ...]]:
  key = (repr(model), shape)
  if key not in _SHAPES:
    clip = jax.ShapeDtypeStruct(shape, np.float32)
    abstract = nn.unbox(jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, train=False), clip))
    _SHAPES[key] = {
        p: tuple(v.shape) for p, v in flax.traverse_util.flatten_dict(
            {k: abstract.get(k, {}) for k in COLLECTIONS}, sep='/').items()}
  return _SHAPES[key]


def _check_fits(model, variables, where, contract):
  """Raises one VidjaxError unless the variables fill `model` exactly."""
  try:
    want = _variable_shapes(model, (1, contract.num_frames,
                                    contract.crop_size, contract.crop_size,
                                    3))
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(f'{where}: model {contract.model_name!r} cannot take '
                      f'{contract.num_frames}x{contract.crop_size}^2 clips: '
                      f'{_first_line(e)}') from None
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
