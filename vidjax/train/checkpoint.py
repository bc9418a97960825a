"""Orbax checkpointing: save every N steps, keep K, resume from the latest.

Orbax writes each step to a temporary directory and renames it when complete,
so an interrupted save never leaves a half-written checkpoint that a restart
would pick up.
"""
import os

import orbax.checkpoint as ocp


def make_manager(workdir: str, *, save_every_steps: int,
                 keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      save_interval_steps=save_every_steps, max_to_keep=keep, create=True,
      # Synchronous saves: the demo machine has two cores, and a finished
      # save is what makes a SIGTERM-triggered exit safe.
      enable_async_checkpointing=False)
  if '://' not in workdir:  # gs:// and other URLs stay as they are.
    workdir = os.path.abspath(workdir)
  # Every process calls save and restore: orbax writes each array's shards
  # from the process that holds them, and the metadata from process 0.
  return ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                               options=options)


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
