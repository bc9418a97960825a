"""The variables to stream: a trainer workdir or a vidjax.convert directory.

`load_checkpoint` reads either into a `StreamCheckpoint` (host numpy
arrays, whatever mesh they were saved from); `check_fits` says in one
error what does not match the config's model.
"""
import collections
from collections.abc import Mapping, Sequence
import dataclasses
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.convert import mapping
from vidjax.errors import VidjaxError
from vidjax.models import resnet

CONVERTED_METADATA = 'vidjax_model.json'  # vidjax.convert.METADATA_FILE
TRAINER_CHECKPOINTS = 'checkpoints'  # vidjax/train/checkpoint.py
COLLECTIONS = ('params', 'batch_stats')


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return (text.splitlines()[0] if text else '') or type(error).__name__


@dataclasses.dataclass
class StreamCheckpoint:
  """Variables read from `directory`.

  Attributes:
    directory: as found (absolute).
    kind: 'trainer' (a workdir's latest checkpoint) or 'converted'.
    variables: {'params', 'batch_stats'} of numpy arrays.
    model_name: the model it was written for (a conversion's metadata, a
      workdir's config.json), None if unknown.
    step: the trainer step, None for a conversion.
  """
  directory: str
  kind: str
  variables: dict
  model_name: str | None = None
  step: int | None = None

  def describe(self) -> str:
    if self.kind == 'converted':
      return f'{self.directory} (converted checkpoint)'
    return f'{self.directory} (trainer checkpoint, step {self.step})'


def _trainer_dirs(directory: str) -> tuple[str, str] | None:
  """(workdir, its checkpoints dir) if `directory` is either of them."""
  inner = os.path.join(directory, TRAINER_CHECKPOINTS)
  if os.path.isdir(inner):
    return directory, inner
  names = os.listdir(directory)
  if any(n.isdigit() and os.path.isdir(os.path.join(directory, n))
         for n in names):
    return os.path.dirname(directory), directory
  return None


def _workdir_model_name(workdir: str) -> str | None:
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      name = json.load(f).get('model_name')
  except (OSError, ValueError, AttributeError):
    return None
  return name if isinstance(name, str) else None


def _restore_trainer(checkpoints: str) -> tuple[int, dict]:
  """(step, {'params', 'batch_stats'}) of the newest trainer checkpoint.

  The trainer saves its whole TrainState (vidjax/train/checkpoint.py);
  this reads only the variables, as host numpy arrays, whatever the mesh
  it was saved from (the optimizer state is never read).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  try:
    manager = ocp.CheckpointManager(
        checkpoints, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers=ocp.PyTreeCheckpointHandler())
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(f'cannot read trainer checkpoints in {checkpoints}: '
                      f'{_first_line(e)}') from None
  try:
    step = manager.latest_step()
    if step is None:
      raise VidjaxError(f'no checkpoint in {checkpoints} (has training '
                        'saved one yet?)')
    try:
      metadata = manager.item_metadata(step)
      tree = getattr(metadata, 'tree', metadata)
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot read checkpoint step {step} in '
                        f'{checkpoints}: {_first_line(e)}') from None
    if not isinstance(tree, Mapping) or 'params' not in tree:
      raise VidjaxError(f'checkpoint step {step} in {checkpoints} is not a '
                        'vidjax trainer checkpoint (no params)')
    wanted = {k: tree[k] for k in COLLECTIONS if tree.get(k)}
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    try:
      restored = manager.restore(step, args=ocp.args.PyTreeRestore(
          wanted, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot restore checkpoint step {step} in '
                        f'{checkpoints}: {_first_line(e)}') from None
  finally:
    manager.close()
  variables = {k: _plain(v) for k, v in restored.items()}
  variables.setdefault('batch_stats', {})
  return int(step), variables


def _plain(tree):
  if isinstance(tree, Mapping):
    return {k: _plain(v) for k, v in tree.items()}
  return np.asarray(tree)


def load_checkpoint(directory: str) -> StreamCheckpoint:
  """The variables in a trainer workdir or a `vidjax.convert` directory.

  A directory with `vidjax_model.json` is a conversion; one with
  `checkpoints/` (or a `checkpoints` directory itself) a trainer workdir,
  whose latest step is read.
  """
  directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
  if not os.path.exists(directory):
    raise VidjaxError(f'checkpoint directory {directory} does not exist')
  if not os.path.isdir(directory):
    raise VidjaxError(f'--checkpoint={directory} is not a directory (want a '
                      'trainer workdir or a python -m vidjax.convert output)')
  if os.path.exists(os.path.join(directory, CONVERTED_METADATA)):
    from vidjax import convert  # pylint: disable=g-import-not-at-top
    try:
      name, _, variables = convert.restore_converted(directory)
    except VidjaxError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot restore the converted checkpoint in '
                        f'{directory}: {_first_line(e)}') from None
    variables = {k: variables.get(k, {}) for k in COLLECTIONS}
    return StreamCheckpoint(directory, 'converted', variables,
                            model_name=name)
  dirs = _trainer_dirs(directory)
  if dirs is None:
    raise VidjaxError(
        f'{directory} is neither a trainer workdir (no {TRAINER_CHECKPOINTS}/'
        f' inside) nor a python -m vidjax.convert output (no '
        f'{CONVERTED_METADATA})')
  workdir, checkpoints = dirs
  step, variables = _restore_trainer(checkpoints)
  return StreamCheckpoint(directory, 'trainer', variables,
                          model_name=_workdir_model_name(workdir), step=step)


def describe_variables(variables) -> str:
  """'a ResNet-50 (bottleneck blocks, width 64, 400 classes)', or a hint."""
  params = variables.get('params', {})
  blocks = collections.Counter()
  for name in params:
    stage, _, block = name.partition('/')
    if stage.startswith('layer') and block.startswith('block'):
      blocks[stage] += 1
  counts = tuple(blocks[f'layer{s}'] for s in range(1, 5))
  bottleneck = 'conv3' in params.get('layer1/block0', {})
  depth = next((d for d, (kind, c) in resnet.DEPTHS.items()
                if c == counts and (kind == 'bottleneck') == bottleneck), None)
  if any(counts):
    width = _shape(params, 'conv1', 'kernel')
    classes = _shape(params, 'fc', 'kernel')
    what = (f'a ResNet-{depth}' if depth else
            f'a ResNet with {"/".join(map(str, counts))} blocks per stage')
    details = ['bottleneck blocks' if bottleneck else 'basic blocks']
    if width:
      details.append(f'width {width[-1]}')
    if classes:
      details.append(f'{classes[-1]} classes')
    return f'{what} ({", ".join(details)})'
  names = sorted(params)
  shown = ', '.join(names[:3]) + (', ...' if len(names) > 3 else '')
  return f'no ResNet (top-level modules: {shown or "none"})'


def _shape(params, *path):
  node = params
  for key in path:
    if not isinstance(node, Mapping) or key not in node:
      return None
    node = node[key]
  return tuple(node.shape)


def num_classes_of(variables, head: str = 'fc') -> int | None:
  shape = _shape(variables.get('params', {}), head, 'kernel')
  return shape[-1] if shape else None


def check_fits(model, model_name: str, checkpoint: StreamCheckpoint):
  """Raises one VidjaxError unless the checkpoint fills `model` exactly."""
  # One frame through the stream path (no segment-count warning); the
  # variables' shapes do not depend on the frame size.
  abstract = nn.unbox(jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), state={})))
  want = {p: tuple(v.shape) for p, v in mapping.flatten(
      {k: abstract.get(k, {}) for k in COLLECTIONS}).items()}
  have = {p: tuple(np.shape(v)) for p, v in mapping.flatten(
      {k: checkpoint.variables.get(k, {}) for k in COLLECTIONS}).items()}
  if want == have:
    return
  problems = []
  for what, paths, other in (
      ('missing', [p for p in want if p not in have], have),
      ('unused', [p for p in have if p not in want], want)):
    # A block the other side lacks altogether (a deeper ResNet's extra
    # blocks) once, not each of its arrays; else the array's module.
    blocks = {p[:2] for p in other}
    modules = list(dict.fromkeys(
        '/'.join(p[:2] if p[:2] not in blocks else p[:-1]) for p in paths))
    if modules:
      problems.append(f'{what} {_listing(modules)}')
  shapes = [f'{"/".join(p)} {list(have[p])} (wants {list(s)})'
            for p, s in want.items() if p in have and have[p] != s]
  if shapes:
    problems.append(f'other shapes: {_listing(shapes)}')
  held = describe_variables(checkpoint.variables)
  if checkpoint.model_name:
    held = f'{checkpoint.model_name!r} weights, {held}'
  wanted = (f'a ResNet-{model.depth} (width {model.width}, '
            f'{model.num_classes} classes)')
  raise VidjaxError(
      f'checkpoint {checkpoint.directory} holds {held}, but the config\'s '
      f'model {model_name!r} is {wanted}: {"; ".join(problems)}')


def _listing(names: Sequence[str], shown: int = 4) -> str:
  more = len(names) - shown
  return ', '.join(names[:shown]) + (f' (+{more} more)' if more > 0 else '')

