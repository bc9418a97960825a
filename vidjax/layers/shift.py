"""Temporal shift (TSM, Lin et al., "TSM: Temporal Shift Module for Efficient
Video Understanding", ICCV 2019).

A temporal shift moves a fraction of the channels one step along time, so that
the 2D convolution that follows mixes information from neighbouring frames at
zero extra FLOPs and parameters. This module follows the official code
(mit-han-lab/temporal-shift-module, `ops/temporal_shift.py`), translated from
its (N·T, C, H, W) layout to our NTHWC one:

  * fold = C // fold_div (the integer division of the official code, so for C
    not divisible by fold_div the shifted slices are rounded down);
  * channels [0, fold) at time t take frame t + 1 (the official "shift left");
  * channels [fold, 2·fold) at time t take frame t − 1 (the "shift right");
  * the remaining channels stay; frames shifted in from outside the clip are
    zeros.

Online TSM (the official `online_demo`) shifts one way only, past → present,
on the first `fold` channels, with a per-block buffer that carries the previous
frame's first `fold` channels; `online_temporal_shift` and
`OnlineTemporalShift` implement it. The buffers start at zero (the reference
demo used uninitialised `tvm.nd.empty` buffers, which is a bug).

Placement in a residual network (`ShiftedResidual`, see there):
  * 'residual' (official `place='blockres'`, the default): only the residual
    branch sees the shifted tensor; the identity path keeps the unshifted
    input, so no information is lost to the zero-filled boundaries.
  * 'in_place' (official `place='block'`): the whole block is wrapped, i.e.
    `block(shift(x))`, so the shortcut also sees the shifted tensor.

2D-ResNet TSM code keeps frames folded into the batch, (N·T, H, W, C); every
function and module here accepts that layout too when given `num_frames`.
"""

from collections.abc import Sequence
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.parallel import halo

Direction = Literal['bidirectional', 'left', 'right']
Placement = Literal['residual', 'in_place']

DIRECTIONS = ('bidirectional', 'left', 'right')
PLACEMENTS = ('residual', 'in_place')


def _shift_time(x: jax.Array, offset: int) -> jax.Array:
  """Returns y[:, t] = x[:, t + offset], zero where t + offset is outside.

  A window op of two frames for `halo.temporal_window`: on a mesh whose
  time axis splits the clip, each shard receives the one boundary frame it
  needs from its neighbour (one collective-permute of the shifted channels
  only) instead of the partitioner gathering the clip; without such a mesh
  it is a pad and a slice. No gather, no in-place update.

  Args:
    x: [N, T, ...] array.
    offset: +1 (take the next frame) or -1 (take the previous frame).
  """
  if offset not in (1, -1):
    raise ValueError(f'offset must be +1 or -1, got {offset}')

  def op(x, padding):
    pad = [(0, 0)] * x.ndim
    pad[1] = padding
    x = jnp.pad(x, pad) if padding != (0, 0) else x
    return x[:, 1:] if offset == 1 else x[:, :-1]

  return halo.temporal_window(op, x, window=2, stride=1,
                              padding=(0, 1) if offset == 1 else (1, 0),
                              pad_value=0.0)


def min_fold_div(direction: str) -> int:
  """Bidirectional shifts 2·fold channels; fold_div=1 would ask for 2·C."""
  return 2 if direction == 'bidirectional' else 1


def _fold(channels: int, fold_div: int, direction: str) -> int:
  """Validates the arguments and returns the number of channels per shift."""
  if direction not in DIRECTIONS:
    raise ValueError(
        f'temporal shift direction must be one of {DIRECTIONS}, got '
        f'{direction!r}')
  min_div = min_fold_div(direction)
  if not isinstance(fold_div, int) or fold_div < min_div:
    raise ValueError(
        f'fold_div must be an integer >= {min_div} for direction '
        f'{direction!r}, got {fold_div!r}')
  return channels // fold_div


def temporal_shift(
    x: jax.Array,
    *,
    fold_div: int = 8,
    direction: Direction = 'bidirectional',
) -> jax.Array:
  """Shifts part of the channels of a clip by one frame along time.

  With fold = C // fold_div:
    * 'bidirectional' (TSM offline): channels [0, fold) at time t take frame
      t + 1, channels [fold, 2·fold) take frame t − 1, the rest stay.
    * 'left': channels [0, fold) at time t take frame t + 1 (future → present).
    * 'right': channels [0, fold) at time t take frame t − 1 (past → present).
      This is the causal shift of online TSM: see `online_temporal_shift`.
  Frames shifted in from beyond the clip are zeros.

  Args:
    x: [N, T, H, W, C] clip (any number of axes after T works: the shift only
      touches axis 1 and the last axis).
    fold_div: the inverse of the fraction of channels moved per direction.
    direction: 'bidirectional', 'left' or 'right'.

  Returns:
    An array with the shape and dtype of `x`.
  """
  if x.ndim < 3:
    raise ValueError(
        f'temporal_shift expects [N, T, ..., C], got shape {x.shape}')
  fold = _fold(x.shape[-1], fold_div, direction)
  if fold == 0:
    # Fewer channels than fold_div: the official slicing then moves nothing.
    return x
  head = x[..., :fold]
  if direction == 'bidirectional':
    parts = [
        _shift_time(head, 1),
        _shift_time(x[..., fold:2 * fold], -1),
        x[..., 2 * fold:],
    ]
  else:
    parts = [_shift_time(head, 1 if direction == 'left' else -1),
             x[..., fold:]]
  return jnp.concatenate(parts, axis=-1)


def _unfold_frames(x: jax.Array, num_frames: int) -> jax.Array:
  """[N·T, ...] → [N, T, ...], batch-major as in TSN/TSM."""
  if num_frames < 1 or x.shape[0] % num_frames:
    raise ValueError(
        f'leading axis {x.shape[0]} is not a multiple of num_frames='
        f'{num_frames}')
  return x.reshape((x.shape[0] // num_frames, num_frames) + x.shape[1:])


def temporal_shift_folded(
    x: jax.Array,
    num_frames: int,
    *,
    fold_div: int = 8,
    direction: Direction = 'bidirectional',
) -> jax.Array:
  """`temporal_shift` for frames folded into the batch, as 2D ResNets run them.

  Args:
    x: [N·T, H, W, C], batch-major (the T frames of clip n are rows
      n·T … n·T + T − 1), as the TSN/TSM input pipeline produces them.
    num_frames: T.
    fold_div: see `temporal_shift`.
    direction: see `temporal_shift`.

  Returns:
    The shifted [N·T, H, W, C] array.
  """
  y = temporal_shift(_unfold_frames(x, num_frames), fold_div=fold_div,
                     direction=direction)
  return y.reshape(x.shape)


class TemporalShift(nn.Module):
  """Parameter-free temporal shift layer.

  Attributes:
    fold_div: 1 / fraction of channels shifted per direction (8 in TSM).
    mode: 'bidirectional', 'left' or 'right'; see `temporal_shift`.
    num_frames: None for NTHWC input [N, T, H, W, C]; T when frames are folded
      into the batch, [N·T, H, W, C].
  """
  fold_div: int = 8
  mode: Direction = 'bidirectional'
  num_frames: int | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.num_frames is None:
      return temporal_shift(x, fold_div=self.fold_div, direction=self.mode)
    return temporal_shift_folded(x, self.num_frames, fold_div=self.fold_div,
                                 direction=self.mode)


class ShiftedResidual(nn.Module):
  """Base class of residual blocks with a temporal shift, in either placement.

  A subclass implements `branch(x, train)` and may override
  `shortcut(x, train)` (identity by default) and `activation(y)` (none by
  default). Their submodules are created inside this module's compact call,
  so they take the names the subclass gives them in the block's own scope
  (a ResNet block's parameters read `layer1/block0/conv1`); modules handed
  over as attributes would be built, and auto-numbered, in the caller's.

  With s = shift(x):
    * placement='residual' (official 'blockres', the TSM default):
        activation(shortcut(x) + branch(s))
    * placement='in_place' (official 'block'):
        activation(shortcut(s) + branch(s))
      i.e. exactly `block(shift(x))`: the official code wraps the whole
      torchvision block, so the identity (or downsample) path sees the shifted
      tensor as well.

  Called with a `buffer` (online TSM, one frame at a time, mode 'right'), s
  is `online_temporal_shift(x, buffer)` and the call returns
  (output, new_buffer).

  Attributes:
    placement: 'residual' or 'in_place'.
    fold_div: see `temporal_shift`; a value above the channel count moves
      nothing (TSN).
    mode: see `temporal_shift`.
    num_frames: None for [N, T, H, W, C] input; T for [N·T, H, W, C].
  """
  placement: Placement = 'residual'
  fold_div: int = 8
  mode: Direction = 'bidirectional'
  num_frames: int | None = None

  def branch(self, x: jax.Array, train: bool) -> jax.Array:
    raise NotImplementedError('a ShiftedResidual subclass defines branch()')

  def shortcut(self, x: jax.Array, train: bool) -> jax.Array:
    del train
    return x

  def activation(self, y: jax.Array) -> jax.Array:
    return y

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               buffer: jax.Array | None = None):
    if self.placement not in PLACEMENTS:
      raise ValueError(
          f'placement must be one of {PLACEMENTS}, got {self.placement!r}')
    if buffer is None:
      shifted = TemporalShift(
          fold_div=self.fold_div, mode=self.mode, num_frames=self.num_frames,
          name='shift')(x)
    elif self.mode != 'right':
      raise ValueError(
          f'streaming needs the causal shift (mode "right"); this block '
          f'shifts {self.mode!r}, which reads future frames')
    else:
      shifted, new_buffer = online_temporal_shift(x, buffer)
    identity = x if self.placement == 'residual' else shifted
    y = self.activation(self.shortcut(identity, train) +
                        self.branch(shifted, train))
    return y if buffer is None else (y, new_buffer)


def init_shift_buffer(
    frame_shape: Sequence[int],
    *,
    fold_div: int = 8,
    dtype: Any = jnp.float32,
) -> jax.Array:
  """Returns the zero buffer that starts an online (streaming) shift.

  Args:
    frame_shape: the shape of one time step's features, (N, H, W, C).
    fold_div: the online shift moves C // fold_div channels.
    dtype: the buffer's dtype; match the features'.

  Returns:
    zeros of shape (N, H, W, C // fold_div).
  """
  *lead, channels = tuple(frame_shape)
  fold = _fold(channels, fold_div, 'right')
  return jnp.zeros((*lead, fold), dtype)


def online_temporal_shift(
    x: jax.Array, buffer: jax.Array) -> tuple[jax.Array, jax.Array]:
  """One step of the online (causal, uni-directional) TSM shift.

  Run frame by frame from a zero `init_shift_buffer`, the outputs equal
  `temporal_shift(clip, direction='right')`: channels [0, fold) at time t hold
  frame t − 1 (zeros at t = 0).

  Args:
    x: the current frame's features, [N, H, W, C].
    buffer: the previous frame's first fold channels, [N, H, W, fold]; fold
      is read from its shape.

  Returns:
    (shifted, new_buffer): `shifted` is x with its first fold channels replaced
    by `buffer`; `new_buffer` is x's (unshifted) first fold channels.
  """
  fold = buffer.shape[-1]
  if buffer.shape[:-1] != x.shape[:-1] or fold > x.shape[-1]:
    raise ValueError(
        f'shift buffer of shape {buffer.shape} does not fit features of shape '
        f'{x.shape}')
  shifted = jnp.concatenate([buffer.astype(x.dtype), x[..., fold:]], axis=-1)
  return shifted, x[..., :fold]


class OnlineTemporalShift(nn.Module):
  """Online TSM shift that keeps its buffer in the 'cache' collection.

  Streaming models then need no explicit buffer plumbing through every block:

    variables = model.init(rng, first_frame)        # cache starts at zero
    for frame in stream:
      out, mutated = model.apply(variables, frame, mutable=['cache'])
      variables = {**variables, **mutated}

  `init` does not advance the buffer, so the first `apply` sees zeros.

  Attributes:
    fold_div: the shift moves C // fold_div channels, past → present.
  """
  fold_div: int = 8

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    buffer = self.variable('cache', 'shift_buffer', init_shift_buffer,
                           x.shape, fold_div=self.fold_div, dtype=x.dtype)
    shifted, new_buffer = online_temporal_shift(x, buffer.value)
    if not self.is_initializing():
      buffer.value = new_buffer
    return shifted
