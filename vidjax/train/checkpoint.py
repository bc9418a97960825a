"""Orbax checkpointing: save every N steps, keep K, resume from the latest;
and, beside them, the best checkpoint by a validation metric.

Orbax writes each step to a temporary directory (`<step>.orbax-checkpoint-
tmp-*`) and renames it when complete, so a save killed midway (SIGKILL, a
lost VM) leaves only that temporary directory: a restart resumes from the
last complete step, and says which temporary directory it ignored
(`incomplete_saves`; tests/train/test_trainer.py kills a save to check).
"""
import os

from etils import epath
import orbax.checkpoint as ocp
from orbax.checkpoint._src.path import atomicity_types

_TMP_SUFFIX = atomicity_types.TMP_DIR_SUFFIX


def make_manager(workdir: str, *, save_every_steps: int,
                 keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every_steps, max_to_keep=keep, create=True,
      # Synchronous saves: the demo machine has two cores, and a finished
      # save is what makes a SIGTERM-triggered exit safe.
      enable_async_checkpointing=False)
  # Every process calls save and restore: orbax writes each array's shards
  # from the process that holds them, and the metadata from process 0.
  return ocp.CheckpointManager(_directory(workdir), options=options)


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
  return ocp.CheckpointManager(_directory(workdir, 'best'), options=options)


def save_scored(manager: ocp.CheckpointManager, step: int, state,
                metrics: dict) -> bool:
  """Saves `state` with its validation `metrics`; orbax keeps the best."""
  if manager.latest_step() == step:  # A resumed run re-evaluating its step.
    return False
  saved = manager.save(step, args=ocp.args.StandardSave(state), force=True,
                       metrics={k: float(v) for k, v in metrics.items()})
  manager.wait_until_finished()
  return saved


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


def _directory(workdir: str, name: str = 'checkpoints') -> str:
  if '://' not in workdir:  # gs:// and other URLs stay as they are.
    workdir = os.path.abspath(workdir)
  return os.path.join(workdir, name)


def save(manager: ocp.CheckpointManager, step: int, state, *,
         force: bool = False) -> bool:
  saved = manager.save(step, args=ocp.args.StandardSave(state), force=force)
  manager.wait_until_finished()
  return saved


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """(step, state) of the newest checkpoint, or (None, None) if there is none.

  `abstract_state` (shapes, dtypes and shardings) tells orbax where each
  restored array goes, so the state comes back sharded as the trainer wants.
  """
  step = manager.latest_step()
  if step is None:
    return None, None
  state = manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
  return step, state
