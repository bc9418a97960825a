"""The trainer's progress: clu's ReportProgress plus one line per interval.

clu's `periodic_actions.ReportProgress` keeps the clock (called after
every step, it reports every `log_every_steps` and at the last step),
writes `steps_per_sec` and `uptime` to the metric writer and sets the work
unit's note. `TrainProgress` adds what the trainer prints: step, loss,
top-1, learning rate, steps/s, clips/s and ETA. The clock starts when the
first step (with its compilation) has finished (`started`), so the first
report's rate already leaves compilation out; time spent in periodic
evaluation is left out too (`pause`), so the ETA is the training's.
"""
import time

from clu import metric_writers
from clu import periodic_actions


class TrainProgress(periodic_actions.ReportProgress):
  """clu's ReportProgress for the training loop, and its log line."""

  def __init__(self, *, total_steps: int, batch_size: int,
               every_steps: int, writer: metric_writers.MetricWriter):
    super().__init__(num_train_steps=total_steps, writer=writer,
                     every_steps=every_steps, every_secs=None)
    self._total = total_steps
    self._batch_size = batch_size
    self._rate = None  # Steps/s of the last interval.

  def started(self, step: int, seconds: float):
    """The first step of this run ended at `step`, `seconds` after it began.

    Starts clu's clock (its first call never reports); a report on this
    very step has only that step's time for its rate.
    """
    self(step)
    self._rate = 1 / max(seconds, 1e-9)

  def pause(self, seconds: float):
    """Leaves `seconds` (an evaluation) out of the current interval."""
    if self._previous_time is not None:
      self._previous_time += seconds

  def _apply(self, step: int, t: float):
    self._rate = (step - self._previous_step) / max(
        t - self._previous_time, 1e-9)
    super()._apply(step, t)

  def line(self, step: int, scalars: dict) -> str:
    """The log line of a reporting step (after this step's call)."""
    rate = self._rate
    eta = (self._total - step) / rate if rate else None
    eta_text = '?' if eta is None else time.strftime('%M:%S', time.gmtime(eta))
    if eta is not None and eta >= 3600:
      eta_text = f'{eta / 3600:.1f}h'
    return (f'step {step}/{self._total} | loss {scalars["train/loss"]:.4f} | '
            f'top1 {scalars["train/top1"]:.3f} | lr {scalars["train/lr"]:.4g}'
            f' | {rate:.2f} steps/s, {rate * self._batch_size:.1f} clips/s | '
            f'ETA {eta_text}')
