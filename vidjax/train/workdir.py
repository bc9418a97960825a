"""The workdir's files other than checkpoints, and checks made on it at start.

Every file is written whole or not at all (a temporary file, then a rename
over the old one): a full disk leaves the previous version, and the run
ends with one line naming the file and the error.

`config.json` is the evidence of which config wrote the checkpoints, so it
is read (`check_same_model`) before a run replaces it, and replaced only
once the checkpoint has been restored (or a fresh start made).
"""
import json
import os

from etils import epath
import ml_collections

from vidjax.errors import VidjaxError
from vidjax.train import checkpoint

CONFIG = 'config.json'


def write_json(path: str, payload: dict):
  write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())


def write_bytes(path: str, data: bytes):
  """Writes `path` atomically: a temporary file, then a rename over it."""
  tmp = epath.Path(f'{path}.tmp')
  try:
    tmp.write_bytes(data)
    tmp.replace(path)  # Overwrites, unlike rename.
  except OSError as e:
    try:
      tmp.unlink(missing_ok=True)
    except OSError:
      pass
    raise VidjaxError(f'could not write {path}: {e.strerror or e}; its '
                      'previous version, if any, is unchanged') from None


def previous_config(workdir: str) -> dict | None:
  """The config.json a previous run wrote, or None (none, or unreadable)."""
  try:
    return json.loads(epath.Path(workdir, CONFIG).read_text())
  except (OSError, ValueError):
    return None


def check_same_model(workdir: str,
                     config: ml_collections.ConfigDict) -> None:
  """One line if the workdir's checkpoints were written by another model.

  The model's name is in the previous config.json; another class count or
  shape is found when the checkpoint's tree is read
  (checkpoint.restore_newest_intact).
  """
  steps = checkpoint.steps_on_disk(workdir)
  old = previous_config(workdir) if steps else None
  if not old or old.get('model_name') in (None, config.model_name):
    return
  options = ', '.join(f'{k}={v!r}' for k, v in
                      sorted((old.get('model') or {}).items()))
  raise VidjaxError(
      f'the checkpoint at step {steps[-1]} in '
      f'{os.path.join(workdir, "checkpoints")} was written by model '
      f'{old["model_name"]} ({options or "its default options"}); this '
      f"run's config has model {config.model_name}: use another --workdir "
      'or the same model')


def check_something_to_evaluate(config: ml_collections.ConfigDict,
                                workdir: str,
                                evaluate_untrained: bool = False) -> None:
  """total_steps=0 only evaluates a model that is not random.

  That is a checkpoint in the workdir or config.init_from's weights;
  `evaluate_untrained` (library callers only: a chance baseline) allows the
  random initialisation.
  """
  if (config.total_steps or config.init_from or evaluate_untrained
      or checkpoint.steps_on_disk(workdir)):
    return
  raise VidjaxError(
      'config.total_steps=0 trains nothing, and there is neither a '
      f'checkpoint in {os.path.join(workdir, "checkpoints")} nor a '
      'config.init_from: only a random model would be evaluated; set '
      'config.total_steps > 0, config.init_from, or a --workdir with a '
      'checkpoint')
