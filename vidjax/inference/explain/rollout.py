"""Attention rollout (Abnar & Zuidema 2020) for every TimeSformer scheme.

The recipe of the TimeSformer paper's Fig. 7 (facebookresearch/TimeSformer
#40, #57): average the heads, add the residual (0.5·A + 0.5·I, rows
renormalised) and multiply the layers' matrices from the output down to
the input; the class token's row says how much each input token flows into
the classified state.

A TimeSformer block is several attention steps, each over groups of tokens
(vidjax/models/timesformer.py, `STEPS`), so each step is a matrix of its
own and the rollout multiplies them in the order the model runs them. The
token-to-token matrix of a step is never built (1 + T·S tokens: 12,545
for HR); the class token's row vector is carried through each step's
groups instead, in the layout the model sows them:

  'time'    (divided, axial) [S groups, T, T]: each patch position over its
            frames; the class token sits it out (its row is the identity).
  'frame'   [T groups, 1+S, 1+S]: each frame's patches and the class token,
            copied into every frame; the model averages the copies'
            outputs, so the class token's row is the mean of its rows.
  'all'     (joint) one group of all 1 + T·S tokens.
  'local', 'global' (sparse local-global), 'row', 'column' (axial): grouped
            like 'frame' (class token copied in, outputs averaged), which
            is what the model does, so the rollout follows its flow.
  space-only: every frame has its own class token; the classified state is
            their mean, so the rollout starts with 1/T on each.

Which patch each grouped position is comes from the model's own grouping
(`timesformer._group` on patch indices), so the rollout cannot drift from
the model; tests/inference/test_explain_rollout.py checks it on hand-made
matrices with known answers and against weights recomputed in numpy.

Divided attention keeps its temporal and spatial maps apart: the class
token's rollout to every (frame, patch) composes both steps, and beside it
`temporal` rolls out the temporal steps alone: per patch position, which
input frames each output frame draws on.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vidjax.errors import VidjaxError
from vidjax.models import timesformer


@dataclasses.dataclass(frozen=True)
class Rollout:
  """The rolled-out attention of one clip.

  Attributes:
    cls_map: [T, h, w], the class token's rollout to every input patch
      token (frame t, patch row y, column x); with `cls_self` it sums to 1.
    cls_self: what stays on the input class token(s).
    temporal: [h, w, T, T], the temporal steps rolled out alone: at patch
      (y, x), row t is how output frame t draws on the input frames. None
      for schemes without a temporal step (space-only, joint, local-global).
  """
  cls_map: np.ndarray
  cls_self: float
  temporal: np.ndarray | None


def with_residual(weights: np.ndarray) -> np.ndarray:
  """0.5·A + 0.5·I on the last two axes, rows renormalised."""
  eye = np.eye(weights.shape[-1])
  mixed = 0.5 * weights + 0.5 * eye
  return mixed / mixed.sum(-1, keepdims=True)


def patch_groups(how: str, frames: int, grid: tuple[int, int]) -> np.ndarray:
  """Patch index t·S + y·w + x of each position of the model's groups.

  [G..., L]: the layout in which the model runs and sows the step `how`.
  """
  s = grid[0] * grid[1]
  index = jnp.arange(frames * s, dtype=jnp.int32).reshape(1, frames, s, 1)
  # pylint: disable-next=protected-access
  groups, _ = timesformer._group(index, how, grid)
  return np.asarray(groups)[0, ..., 0]


def _steps(scheme: str):
  if scheme not in timesformer.STEPS:
    raise VidjaxError(f'unknown attention scheme {scheme!r}; known: '
                      f'{", ".join(timesformer.SCHEMES)}')
  return timesformer.STEPS[scheme]


def _check_shape(weights, groups, with_cls, where):
  length = groups.shape[-1] + with_cls
  want = (*groups.shape[:-1], length, length)
  if weights.shape != want:
    raise VidjaxError(f'attention weights of {where} have shape '
                      f'{weights.shape}; this clip and scheme give {want}')


def rollout(blocks: list[dict[str, np.ndarray]], scheme: str, frames: int,
            grid: tuple[int, int]) -> Rollout:
  """Attention rollout of one clip from head-averaged weights.

  Args:
    blocks: per block, in order, {step prefix: weights} as the model sows
      them for one clip with the heads averaged: [G..., L, L] ('' is the
      block's `attn`, 'temporal_' its `temporal_attn`, ...).
    scheme: the model's attention scheme.
    frames, grid: T and the (h, w) patch grid of the clip.
  """
  steps = _steps(scheme)
  space_only = scheme == 'space_only'
  num_patches = frames * grid[0] * grid[1]
  copies = frames if space_only else 1   # Class tokens the head averages.
  cls = np.full(copies, 1.0 / copies)
  patches = np.zeros(num_patches)
  temporal = None
  groups = {how: patch_groups(how, frames, grid) for _, how in steps}
  for index in reversed(range(len(blocks))):
    for prefix, how in reversed(steps):
      step = groups[how]
      with_cls = how != 'time'
      where = f'block {index} step {prefix or "attn"!r}'
      if prefix not in blocks[index]:
        raise VidjaxError(f'no attention weights for {where}')
      weights = np.asarray(blocks[index][prefix], np.float64)
      _check_shape(weights, step, with_cls, where)
      mixed = with_residual(weights).reshape(-1, *weights.shape[-2:])
      flat = step.reshape(-1, step.shape[-1])              # [G, L]
      if not with_cls:
        patches[flat] = np.einsum('gl,glm->gm', patches[flat], mixed)
        temporal = _compose_temporal(temporal, mixed, flat, grid)
        continue
      if space_only:
        row = cls[:, None]       # Each frame's group has its own class token.
      else:
        row = np.full((len(flat), 1), cls[0] / len(flat))
      out = np.einsum('gl,glm->gm', np.concatenate([row, patches[flat]], 1),
                      mixed)
      cls = out[:, 0] if space_only else out[:, :1].sum(0)
      patches[flat] = out[:, 1:]
  temporal_map = None
  if temporal is not None:
    temporal_map = temporal.reshape(*grid, frames, frames)
  return Rollout(cls_map=patches.reshape(frames, *grid),
                 cls_self=float(cls.sum()), temporal=temporal_map)


def _compose_temporal(temporal, mixed, flat, grid):
  """temporal[s] @ mixed[s] per patch position s (in canonical order).

  Called from the output block down, so the product is M_L ··· M_1: row t
  is output frame t over the input frames.
  """
  s_count = grid[0] * grid[1]
  position = flat[:, 0] % s_count                        # Group g's patch.
  frame = flat // s_count                                # [G, T]
  canonical = np.zeros((s_count, flat.shape[1], flat.shape[1]))
  for g, s in enumerate(position):
    order = frame[g]
    canonical[s][np.ix_(order, order)] = mixed[g]
  if temporal is None:
    return canonical
  return temporal @ canonical


def sown_blocks(intermediates: dict, scheme: str) -> list[dict]:
  """{blocks_i: {<prefix>attn: {'attention': (w,)}}} → rollout's `blocks`.

  Keeps the weights as sown (batch first); `rollout` takes one clip.
  """
  steps = _steps(scheme)
  blocks = []
  index = 0
  while f'blocks_{index}' in intermediates:
    block = intermediates[f'blocks_{index}']
    blocks.append({prefix: block[f'{prefix}attn']['attention'][0]
                   for prefix, _ in steps})
    index += 1
  if not blocks:
    raise VidjaxError('the model sowed no attention weights')
  return blocks


def check_model(model):
  """VidjaxError unless `model` has attention to roll out."""
  if not isinstance(model, timesformer.TimeSformer):
    raise VidjaxError(f'attention rollout needs a TimeSformer; '
                      f'{type(model).__name__} has no attention (use '
                      '--method=gradcam)')


def attention_of(model, variables, clip) -> tuple[np.ndarray, list[dict]]:
  """(logits [N, classes], head-averaged sown weights per block).

  The heads are averaged inside the jitted call, so only the averaged
  maps leave it (the joint scheme's are [1 + T·S]² per block).
  """
  check_model(model)
  sowing = model.clone(sow_weights=True, remat='none')

  def run(variables, clip):
    logits, state = sowing.apply(variables, clip, train=False,
                                 mutable=['intermediates'])
    maps = jax.tree.map(lambda w: w.mean(axis=-3), state['intermediates'])
    return logits, maps

  logits, maps = jax.jit(run)(variables, clip)
  maps = jax.tree.map(np.asarray, maps)
  return np.asarray(logits), sown_blocks(maps, model.scheme)


def explain(model, variables, clip) -> tuple[np.ndarray, Rollout]:
  """(logits [classes], Rollout) of one clip [1, T, H, W, 3]."""
  logits, blocks = attention_of(model, variables, clip)
  _, frames, height, width, _ = clip.shape
  grid = (height // model.patch_size, width // model.patch_size)
  one = [{k: v[0] for k, v in block.items()} for block in blocks]
  return logits[0], rollout(one, model.scheme, frames, grid)
