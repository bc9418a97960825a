"""The online TSM step, its state carried explicitly, and the running
prediction over the frames fed so far."""
import collections
from collections.abc import Iterable, Iterator, Sequence
import dataclasses
import time

import jax
import numpy as np

from vidjax.errors import VidjaxError
from vidjax.models import resnet

ONLINE_MODELS = tuple(f'tsm_online_r{d}' for d in sorted(resnet.DEPTHS))


def check_streamable(model, name: str = ''):
  """Raises VidjaxError unless `model` is an online TSM that can stream."""
  name = repr(name) if name else type(model).__name__
  online = ', '.join(ONLINE_MODELS)
  if not isinstance(model, resnet.TSM):
    raise VidjaxError(
        f'model {name} cannot stream: vidjax.stream runs online TSM models '
        f"(shift='right', past frames only): {online}")
  if model.shift != 'right':
    why = ('reads the next frame (bidirectional shift)'
           if model.shift == 'bidirectional' else
           'has no temporal shift (TSN), so no stream state')
    raise VidjaxError(
        f"model {name} (shift={model.shift!r}) {why}; vidjax.stream runs "
        f"online TSM (shift='right'): {online}")
  if model.temporal_pool:
    raise VidjaxError(f'model {name} pools over time (temporal_pool=True), '
                      'which needs whole clips and cannot stream')


def make_stream_step(model):
  """The jitted `(variables, frame [N, H, W, 3], state) -> (logits, state)`.

  `state` is the explicit pytree of the shifted blocks' caches; start from
  `init_state` (zeros). An empty dict works too but is another pytree
  structure, so the second frame would compile the step again.
  """
  check_streamable(model)

  def step(variables, frame, state):
    return model.apply(variables, frame, train=False, state=state)

  return jax.jit(step)


def init_state(model, variables, frame_shape: Sequence[int]) -> dict:
  """The reset (zero) state for frames of `frame_shape` [N, H, W, 3]."""
  return resnet.init_stream_state(model, variables, tuple(frame_shape))


@dataclasses.dataclass(frozen=True)
class StreamUpdate:
  """What `stream_video` knows after each frame.

  Attributes:
    count: frames fed so far (1 after the first).
    logits: this frame's logits, [classes] ([N, classes] for batched
      frames).
    mean_logits: the mean of the per-frame logits over the window (all
      frames so far by default).
    probabilities: softmax(mean_logits): the running prediction.
    first_seconds: wall time of the first frame (mostly compilation).
    seconds: wall time from the end of the first frame to now.
    step_seconds: of which in the step (frames 2..count).
  """
  count: int
  logits: np.ndarray
  mean_logits: np.ndarray
  probabilities: np.ndarray
  first_seconds: float
  seconds: float
  step_seconds: float

  @property
  def frames_per_second(self) -> float | None:
    """End to end after the first frame; None before a second frame."""
    if self.count < 2 or self.seconds <= 0:
      return None
    return (self.count - 1) / self.seconds

  @property
  def step_frames_per_second(self) -> float | None:
    """The step alone, after the first frame."""
    if self.count < 2 or self.step_seconds <= 0:
      return None
    return (self.count - 1) / self.step_seconds


def _softmax(x: np.ndarray) -> np.ndarray:
  x = x - np.max(x, axis=-1, keepdims=True)
  e = np.exp(x)
  return e / np.sum(e, axis=-1, keepdims=True)


def stream_video(step, variables, frames: Iterable[np.ndarray], state, *,
                 window: int = 0) -> Iterator[StreamUpdate]:
  """Feeds `frames` one by one through `step`; yields after every frame.

  Args:
    step: `make_stream_step(model)`.
    variables: the model's {'params', 'batch_stats'}.
    frames: preprocessed float32 frames [H, W, 3] (or batches [N, H, W, 3]
      of N streams), e.g. a `VideoFrames`.
    state: the starting state (`init_state`), carried explicitly.
    window: average the logits of the last `window` frames; 0: all of them.

  Yields:
    A `StreamUpdate` per frame.
  """
  if window < 0:
    raise VidjaxError(f'window must be >= 0, got {window}')
  recent = collections.deque(maxlen=window or None)
  total = None
  count, first_seconds, step_seconds, t_first = 0, 0.0, 0.0, None
  start = time.perf_counter()
  for frame in frames:
    frame = np.asarray(frame, np.float32)
    single = frame.ndim == 3
    t0 = time.perf_counter()
    logits, state = step(variables, frame[None] if single else frame, state)
    logits = np.asarray(logits, np.float64)  # Waits for the step.
    now = time.perf_counter()
    logits = logits[0] if single else logits
    count += 1
    if t_first is None:
      t_first, first_seconds = now, now - start
    else:
      step_seconds += now - t0
    if window:
      recent.append(logits)
      mean = np.mean(recent, axis=0)
    else:
      total = logits if total is None else total + logits
      mean = total / count
    yield StreamUpdate(
        count=count, logits=logits.astype(np.float32),
        mean_logits=mean.astype(np.float32),
        probabilities=_softmax(mean).astype(np.float32),
        first_seconds=first_seconds, seconds=now - t_first,
        step_seconds=step_seconds)
