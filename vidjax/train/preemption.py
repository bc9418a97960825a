"""Stop on SIGTERM at a step every process agrees on (MaxText, orbax).

A TPU VM is told of a maintenance event or a spot preemption by SIGTERM,
and the hosts of a pod slice do not all receive it at the same step. A
process that stopped alone would leave the others hanging in the next
collective (the gradient all-reduce or the checkpoint save). So with more
than one process, the decision goes through JAX's preemption sync point
(`multihost_utils.reached_preemption_sync_point`): its notifier catches
SIGTERM in any process and the coordination service picks one step at which
`reached` is True in every process; all of them save that step and exit.

A single process catches SIGTERM and SIGINT itself and stops after the step
it is in.
"""
import signal

import jax
from jax.experimental import multihost_utils


class StopSignal:
  """`reached(step)`: stop after this step (the same step on every host)."""

  def __init__(self):
    self.reason = None
    self._multi = jax.process_count() > 1
    self._previous = {}
    # With several processes, JAX's notifier owns SIGTERM (installed by
    # jax.distributed.initialize); a Python handler would replace it.
    for signum in ((signal.SIGINT,) if self._multi
                   else (signal.SIGTERM, signal.SIGINT)):
      self._previous[signum] = signal.signal(signum, self._on_signal)
    self._local = None

  def _on_signal(self, signum, _):
    self._local = signal.Signals(signum).name

  def reached(self, step: int) -> bool:
    if self._multi:
      if multihost_utils.reached_preemption_sync_point(step):
        self.reason = 'SIGTERM (preemption sync point)'
        return True
      if self._local is not None:
        # Ctrl-C on one host of many: interrupt at once, as without us;
        # the others will time out of their next collective.
        raise KeyboardInterrupt
      return False
    if self._local is not None:
      self.reason = self._local
      return True
    return False

  def close(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
