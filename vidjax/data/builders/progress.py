"""The conversion's status line: videos done, rate and ETA.

Videos, not training steps (that is train/progress.py, on clu's clock).
Hand-written rather than tqdm: a log file gets one plain line every 30 s,
where tqdm would write its carriage-return redraws into it, and resumed
videos count as done but not towards the rate.
"""

from __future__ import annotations

import sys
import time


def format_seconds(s: float) -> str:
  s = int(round(s))
  return f'{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}'


class ConversionProgress:
  """One status line: done/total, rate, ETA (stderr; redrawn on a TTY).

  Resumed videos count towards done but not towards the rate, so the ETA
  of a resumed run is what is left at this run's speed.
  """

  def __init__(self, label: str, total: int, already: int, stream=None):
    self.label, self.total, self.already = label, total, already
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.start = time.monotonic()
    self.last_print = 0.0
    self.done_now = 0

  def line(self, done_now: int) -> str:
    elapsed = max(time.monotonic() - self.start, 1e-9)
    done = self.already + done_now
    rate = done_now / elapsed
    left = self.total - done
    eta = format_seconds(left / rate) if rate > 0 else '?'
    pct = 100.0 * done / max(self.total, 1)
    resumed = f', {self.already} resumed' if self.already else ''
    return (f'{self.label}: {done}/{self.total} videos ({pct:.1f}%{resumed}), '
            f'{rate:.2f} videos/s, ETA {eta}')

  def update(self, done_now: int, final: bool = False):
    self.done_now = done_now
    now = time.monotonic()
    # A log file gets a line every 30 s, not a redraw every half second.
    interval = 0.5 if self.tty else 30.0
    if not final and now - self.last_print < interval:
      return
    self.last_print = now
    text = self.line(done_now)
    if self.tty:
      self.stream.write('\r' + text + ('\n' if final else ''))
    else:
      self.stream.write(text + '\n')
    self.stream.flush()
