"""The trainer's progress line: rate and ETA from clu's clock, evaluation
time left out, the first step's compilation left out."""
import time

import pytest

from vidjax.train import progress as progress_lib

SCALARS = {'train/loss': 1.5, 'train/top1': 0.25, 'train/lr': 0.1}


class Clock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class Writer:

  def __init__(self):
    self.scalars = []

  def write_scalars(self, step, scalars):
    self.scalars.append((step, scalars))


@pytest.fixture
def clock(monkeypatch):
  c = Clock()
  monkeypatch.setattr(time, 'monotonic', c)
  return c


def test_rate_and_eta_leave_compilation_and_evaluation_out(clock):
  writer = Writer()
  progress = progress_lib.TrainProgress(total_steps=25, batch_size=4,
                                        every_steps=5, writer=writer)
  progress.started(1, seconds=30.0)  # The first step compiled for 30 s.
  for step in range(2, 6):  # Four more steps, one second each.
    clock.now += 1
    progress(step)
  line = progress.line(5, SCALARS)
  assert line == ('step 5/25 | loss 1.5000 | top1 0.250 | lr 0.1 | '
                  '1.00 steps/s, 4.0 clips/s | ETA 00:20')
  clock.now += 60
  progress.pause(60)  # A 60-second evaluation.
  for step in range(6, 11):  # Five steps in 2.5 s.
    clock.now += 0.5
    progress(step)
  assert '2.00 steps/s, 8.0 clips/s | ETA 00:07' in progress.line(10, SCALARS)
  # clu writes its own rate (the same) at each report.
  rates = [(s, v['steps_per_sec']) for s, v in writer.scalars
           if 'steps_per_sec' in v]
  assert rates == [(5, pytest.approx(1.0)), (10, pytest.approx(2.0))]


def test_a_report_on_the_first_step_has_that_steps_rate(clock):
  progress = progress_lib.TrainProgress(total_steps=3, batch_size=2,
                                        every_steps=1, writer=Writer())
  progress.started(1, seconds=0.5)
  assert '2.00 steps/s, 4.0 clips/s | ETA 00:01' in progress.line(1, SCALARS)
  clock.now += 0.25
  progress(2)
  assert '4.00 steps/s' in progress.line(2, SCALARS)


def test_a_long_eta_is_in_hours(clock):
  progress = progress_lib.TrainProgress(total_steps=10_000, batch_size=1,
                                        every_steps=2, writer=Writer())
  progress.started(1, seconds=10.0)
  clock.now += 1
  progress(2)  # 1 step/s: 9,998 s left.
  assert progress.line(2, SCALARS).endswith('ETA 2.8h')
