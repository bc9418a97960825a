"""Orbax checkpointing: save every N steps, keep K, resume from the newest
intact step; and, beside them, the best checkpoint by a validation metric.

Orbax writes each step to a temporary directory (`<step>.orbax-checkpoint-
tmp*`) and renames it when complete, so a save killed midway (SIGKILL, a
lost VM, a full disk) leaves only that temporary directory: a restart
resumes from the last complete step, and says which temporary directory it
ignored (`incomplete_saves`; tests/train/test_trainer.py kills a save).

A complete step can still be damaged afterwards (a file deleted, truncated
or unreadable). `restore_newest_intact` tries the steps newest first, each
with orbax's own restore (its errors are the damage test: no format check
is repeated here), and moves every damaged step it skipped out of orbax's
sight, to `<workdir>/checkpoints_set_aside/<step>`: never deleted, never
counted by `keep_checkpoints`, never in the way of a later save of that
step. When no step restores, nothing is moved and the run stops with one
line: a fault that hits every step alike (a changed mesh, memory) must not
empty the directory, and a rerun must not start afresh over the results.

Several processes: each tries the same steps in the same order (listed from
the shared directory) and a step counts as intact only if every process
restored it (an all-gather of the outcomes), so all reach one decision;
process 0 alone moves directories, then all wait for it and re-list.
"""
import errno as errno_lib
import os
import re

from etils import epath
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import atomicity_types

from vidjax.errors import VidjaxError
from vidjax.parallel import distributed

_TMP_SUFFIX = atomicity_types.TMP_DIR_SUFFIX
SET_ASIDE = 'checkpoints_set_aside'
# A step's custom metadata key for the preprocessing contract
# (vidjax/inference/contract.py; vidjax/inference/loader.py reads it).
CONTRACT_KEY = 'vidjax_contract'
# A step's directory name, as orbax's standard name format has it.
_STEP_NAME = re.compile(r'^(0|[1-9]\d*)$')
# Errors of the storage, not of the data: a save that meets one ends the run
# with one line (`save`). Tensorstore reports the errno in its message.
_STORAGE_ERRNOS = frozenset({
    errno_lib.ENOSPC, errno_lib.EFBIG, errno_lib.EDQUOT, errno_lib.EROFS,
    errno_lib.EACCES, errno_lib.EPERM, errno_lib.EIO})
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")


def make_manager(workdir: str, *, save_every_steps: int,
                 keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every_steps, max_to_keep=keep, create=True,
      # Synchronous saves: the demo machine has two cores, and a finished
      # save is what makes a SIGTERM-triggered exit safe.
      enable_async_checkpointing=False)
  # Every process calls save and restore: orbax writes each array's shards
  # from the process that holds them, and the metadata from process 0.
  # The handler named up front lets `item_metadata` read a step's tree.
  return ocp.CheckpointManager(
      _directory(workdir), options=options,
      item_handlers=ocp.StandardCheckpointHandler())


def make_best_manager(workdir: str, metric: str,
                      mode: str) -> ocp.CheckpointManager:
  """Keeps one checkpoint under `<workdir>/best`: the best by `metric`.

  orbax ranks the saved steps by `best_fn` of the metrics saved with them and
  deletes all but the best, so the latest checkpoints (`make_manager`) stay
  what a resume needs while this one stays what a user wants to keep.
  Resumes keep the ranking: orbax reads the saved metrics back.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=1, create=True, best_fn=lambda m: m[metric],
      best_mode=mode, enable_async_checkpointing=False)
  return ocp.CheckpointManager(
      _directory(workdir, 'best'), options=options,
      item_handlers=ocp.StandardCheckpointHandler())


def save_scored(manager: ocp.CheckpointManager, step: int, state,
                metrics: dict, *, custom_metadata: dict | None = None) -> bool:
  """Saves `state` with its validation `metrics`; orbax keeps the best."""
  if manager.latest_step() == step:  # A resumed run re-evaluating its step.
    return False
  return save(manager, step, state, force=True,
              metrics={k: float(v) for k, v in metrics.items()},
              custom_metadata=custom_metadata)


def save(manager: ocp.CheckpointManager, step: int, state, *,
         force: bool = False, metrics: dict | None = None,
         custom_metadata: dict | None = None) -> bool:
  """Saves `state` at `step` (if due, or `force`) and waits for it.

  `custom_metadata` goes into the step's own metadata file, written with
  it: the preprocessing contract (vidjax/inference/contract.py), so a step
  copied alone still says how to feed its weights.

  A save the storage refuses (a full disk, a quota, a read-only mount) ends
  the run with one line naming the directory and the error; orbax's
  temporary directory of that step stays, and the next run ignores it.
  """
  previous = manager.latest_step()
  try:
    saved = manager.save(step, args=ocp.args.StandardSave(state),
                         force=force, metrics=metrics,
                         custom_metadata=custom_metadata)
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-exception-caught
    why = storage_error(e)
    if why is None:
      raise
    kept = (f'the checkpoint at step {previous} is intact'
            if previous is not None else 'no earlier checkpoint exists')
    raise VidjaxError(
        f'saving the checkpoint of step {step} in {manager.directory} '
        f'failed: {why}; {kept}: free space (or fix the storage) and rerun '
        'the same command to resume') from None
  return saved


def storage_error(e: BaseException) -> str | None:
  """'No space left on device (errno 28)' if `e` is a storage fault."""
  code = getattr(e, 'errno', None)
  if code is None:
    match = _TENSORSTORE_ERRNO.search(str(e))
    code = int(match.group(1)) if match else None
  if code not in _STORAGE_ERRNOS:
    return None
  return f'{os.strerror(code)} (errno {code})'


def restore_args(abstract_state):
  return ocp.args.StandardRestore(abstract_state)


def incomplete_saves(workdir: str) -> list[str]:
  """Temporary directories of saves that were interrupted before renaming.

  Call it before `make_manager`, which may clean them up.
  """
  root = epath.Path(_directory(workdir))
  if not root.exists():
    return []
  return sorted(os.fspath(p) for p in root.iterdir() if _TMP_SUFFIX in p.name)


def steps_on_disk(workdir: str, name: str = 'checkpoints') -> list[int]:
  """Step numbers of the step directories under `<workdir>/<name>`, sorted.

  A plain listing (no orbax, no reads): for checks that must answer before
  anything is built.
  """
  root = epath.Path(_directory(workdir, name))
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir()
                if _STEP_NAME.match(p.name) and p.is_dir())


def _directory(workdir: str, name: str = 'checkpoints') -> str:
  if '://' not in workdir:  # gs:// and other URLs stay as they are.
    workdir = os.path.abspath(workdir)
  return os.path.join(workdir, name)


def restore_newest_intact(manager: ocp.CheckpointManager, abstract_state,
                          say=print):
  """(step, state) of the newest step that restores, or (None, None).

  `abstract_state` (shapes, dtypes and shardings) tells orbax where each
  restored array goes, so the state comes back sharded as the trainer wants.
  Damaged newer steps are moved aside and each is reported by `say` in one
  line (see the module docstring). Raises a one-line VidjaxError when the
  steps hold another state tree than `abstract_state` (another model, class
  count or shape), and when steps exist but none restores.
  """
  is_chief = jax.process_index() == 0
  workdir = os.path.dirname(os.fspath(manager.directory))
  _set_aside_non_directories(manager, workdir, say if is_chief else _quiet)
  damaged = []
  step = state = None
  for candidate in reversed(manager.all_steps()):
    # orbax's restore and the agreement below are gloo collectives, which
    # give up when processes arrive more than 30 s apart: meet first, with
    # --peer_timeout_s and a line naming the late processes.
    distributed.barrier('restore', 'restore a checkpoint')
    reason, state = _try_restore(manager, candidate, abstract_state)
    distributed.barrier('restored', 'finish restoring a checkpoint')
    if not _everywhere(reason is None):
      reason = reason or 'another process could not restore it'
    if reason is None:
      step = candidate
      break
    damaged.append((candidate, reason))
    state = None
  if step is None and damaged:
    listed = '; '.join(f'step {s}: {why}' for s, why in damaged)
    raise VidjaxError(
        f'no checkpoint in {manager.directory} restores ({listed}); none '
        'was moved or deleted: to start afresh, use another --workdir')
  moved = set_aside(manager, workdir, [s for s, _ in damaged])
  if is_chief:
    for (s, why), dest in zip(damaged, moved):
      say(f'Skipped the checkpoint at step {s}: {why}; moved it to {dest}')
  return step, state


def restore_best(manager: ocp.CheckpointManager, step: int, abstract_state,
                 say=print):
  """(state, None) of best `step`, or (None, why) if it does not restore.

  A damaged best checkpoint is moved aside like a damaged latest one.
  """
  reason, state = _try_restore(manager, step, abstract_state)
  if not _everywhere(reason is None):
    reason = reason or 'another process could not restore it'
  if reason is None:
    return state, None
  workdir = os.path.dirname(os.fspath(manager.directory))
  (dest,) = set_aside(manager, workdir, [step], prefix='best-')
  if jax.process_index() == 0:
    say(f'The best checkpoint at step {step} does not restore: {reason}; '
        f'moved it to {dest}')
  return None, f'the best checkpoint (step {step}) does not restore: {reason}'


def set_aside_best_after(manager: ocp.CheckpointManager, step: int,
                         say=print) -> None:
  """Moves aside best checkpoints newer than `step`, the resumed step.

  After a fall back to an older step they belong to a future this run does
  not have; left in place, orbax would keep ranking them.
  """
  later = [s for s in manager.all_steps() if s > step]
  if not later:
    return
  workdir = os.path.dirname(os.fspath(manager.directory))
  moved = set_aside(manager, workdir, later, prefix='best-')
  if jax.process_index() == 0:
    for s, dest in zip(later, moved):
      say(f'Set aside the best checkpoint at step {s}: written after step '
          f'{step}, which this run resumes from; moved it to {dest}')


def set_aside(manager: ocp.CheckpointManager, workdir: str,
              steps: list[int], prefix: str = '') -> list[str]:
  """Moves `steps`' directories to `<workdir>/checkpoints_set_aside/`.

  Process 0 moves (to `<prefix><step>`, or `<prefix><step>.<n>` if that is
  taken); every process waits for it and re-lists the manager's steps.
  Returns the destinations (on process 0; '' on the others).
  """
  if not steps:
    return []
  root = epath.Path(workdir) / SET_ASIDE
  names = [''] * len(steps)
  if jax.process_count() > 1:
    # Every process has listed the steps before any is moved, so all lists
    # (and so all calls here) are the same.
    multihost_utils.sync_global_devices('vidjax: checkpoints listed')
  if jax.process_index() == 0:
    for i, step in enumerate(steps):
      name, n = f'{prefix}{step}', 0
      while (root / name).exists() or name in names:
        n += 1
        name = f'{prefix}{step}.{n}'
      names[i] = name
    source = epath.Path(manager.directory)
    try:
      root.mkdir(parents=True, exist_ok=True)
      for step, name in zip(steps, names):
        (source / str(step)).rename(root / name)
    except OSError as e:
      raise VidjaxError(f'could not move a damaged checkpoint out of '
                        f'{source} to {root}: {e.strerror or e}') from None
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('vidjax: checkpoints set aside')
  manager.reload()
  return [os.fspath(root / name) if name else '' for name in names]


def _set_aside_non_directories(manager, workdir: str, say) -> None:
  """A file (or dangling link) named like a step: orbax does not list it,
  and a later save of that step would fail renaming onto it."""
  root = epath.Path(manager.directory)
  strays = sorted(int(p.name) for p in root.iterdir()
                  if _STEP_NAME.match(p.name) and not p.is_dir())
  moved = set_aside(manager, workdir, strays)
  for step, dest in zip(strays, moved):
    say(f'Skipped {root / str(step)}: not a directory, so not a checkpoint; '
        f'moved it to {dest}')


def _quiet(_):
  pass


def _try_restore(manager, step: int, abstract_state):
  """(None, state), or (why it failed, None) on any error of orbax's.

  A state tree that differs from `abstract_state` is not damage: it raises.
  """
  step_dir = epath.Path(manager.directory) / str(step)
  try:
    saved = manager.item_metadata(step)
  except Exception as e:  # pylint: disable=broad-exception-caught
    return _why(e, step_dir), None
  # None when orbax cannot read the tree: its restore then says why.
  difference = saved is not None and first_difference(saved, abstract_state)
  if difference:
    raise VidjaxError(
        f'the checkpoint at step {step} in {manager.directory} holds another '
        f'state than this run builds: {difference}: use another --workdir, '
        'or the config that wrote it')
  try:
    state = manager.restore(step, args=ocp.args.StandardRestore(
        abstract_state))
  except Exception as e:  # pylint: disable=broad-exception-caught
    return _why(e, step_dir), None
  return None, state


def _why(e: BaseException, step_dir: epath.Path) -> str:
  """One line on why a step did not restore: orbax's first line."""
  try:
    if not any(step_dir.iterdir()):
      return 'its directory is empty'
  except OSError:
    pass
  text = str(e).split(' See full TensorStore details')[0]
  text = ' '.join(text.split())
  if len(text) > 300:
    text = text[:297] + '...'
  return f'{type(e).__name__}: {text}'


def _everywhere(ok: bool) -> bool:
  """True if `ok` on every process (an all-gather; one process: `ok`)."""
  if jax.process_count() == 1:
    return ok
  import numpy as np  # pylint: disable=g-import-not-at-top
  return bool(np.all(multihost_utils.process_allgather(np.int32(ok))))


def _leaves(tree) -> dict[str, object]:
  """{'params/Conv/kernel': leaf}: key paths of any pytree, as strings."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  out = {}
  for path, leaf in flat:
    parts = []
    for key in path:
      for attr in ('key', 'name', 'idx'):
        if hasattr(key, attr):
          parts.append(str(getattr(key, attr)))
          break
    out['/'.join(parts)] = leaf
  return out


def first_difference(saved, abstract_state) -> str | None:
  """The first leaf whose path, shape or dtype differs, as words; or None."""
  theirs, ours = _leaves(saved), _leaves(abstract_state)

  def describe(leaf):
    return f'{tuple(leaf.shape)} {leaf.dtype}'

  for path, leaf in ours.items():
    if path not in theirs:
      return f'{path} {describe(leaf)} is not in the checkpoint'
    other = theirs[path]
    if not hasattr(other, 'shape'):
      continue
    if (tuple(other.shape) != tuple(leaf.shape)
        or str(other.dtype) != str(leaf.dtype)):
      return (f'{path} is {describe(other)} in the checkpoint, '
              f'{describe(leaf)} in this run')
  for path, leaf in theirs.items():
    if path not in ours:
      return f"the checkpoint's {path} is not in this run's state"
  return None
