"""The run's scalars per reported step, kept in `<workdir>/history.json`.

The curves (report.plot_curves) show the whole run, resumes included: the
history is written atomically (workdir.write_json) at every report, every
validation and every checkpoint save, and a resume reads it back and drops
what came after the resumed step (a fall back to an older checkpoint must
not keep a future the run no longer has).

A checkpoint saved between two reports (a preemption) leaves a partly
summed reporting interval: its per-step sums are kept under 'pending',
keyed by the step saved, so that the resumed run's next report averages
the same steps as an uninterrupted run would, to the bit.
"""
import json
import os

from etils import epath

from vidjax.train import workdir as workdir_lib

FILENAME = 'history.json'


class History:
  """Entries ({'step': s, 'train/loss': ..., ...}) and pending intervals."""

  def __init__(self, path: str, entries=(), pending=None):
    self.path = path
    self.entries = list(entries)
    self.pending = dict(pending or {})  # str(step) -> [per-step sums].

  @classmethod
  def resume(cls, workdir: str, step: int, say=print) -> 'History':
    """The history up to `step` (the resumed step; 0 for a fresh start)."""
    path = os.path.join(workdir, FILENAME)
    file = epath.Path(path)
    if not step or not file.exists():
      return cls(path)
    try:
      saved = json.loads(file.read_text())
      entries = [e for e in saved['entries'] if e['step'] <= step]
      pending = saved.get('pending', {})
    except (OSError, ValueError, KeyError, TypeError) as e:
      say(f'{path} is unreadable ({e}); the curves start at step {step}')
      return cls(path)
    return cls(path, entries, {k: v for k, v in pending.items()
                               if int(k) == step})

  def interval_at(self, step: int) -> list[dict]:
    """The per-step sums of the reporting interval open at `step`."""
    return [dict(s) for s in self.pending.get(str(step), [])]

  def add(self, entry: dict):
    self.entries.append(entry)

  def has(self, step: int, prefix: str) -> bool:
    return any(e['step'] == step and any(k.startswith(prefix) for k in e)
               for e in self.entries)

  def write(self, *, open_interval=None, saved_steps=None):
    """Writes the file; `open_interval` is (step, per-step sums) of a save.

    With `saved_steps` (those a resume can start from), pending intervals
    of other steps are dropped.
    """
    if saved_steps is not None:
      keep = {str(s) for s in saved_steps}
      self.pending = {k: v for k, v in self.pending.items() if k in keep}
    if open_interval is not None:
      step, sums = open_interval
      if sums:
        self.pending[str(step)] = [
            {k: float(v) for k, v in s.items()} for s in sums]
    workdir_lib.write_json(self.path, {'entries': self.entries,
                                       'pending': self.pending})
