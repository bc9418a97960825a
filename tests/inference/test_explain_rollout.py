"""Attention rollout: token order on hand-made weights with known answers,
and the real model's sown weights in the layout the rollout reads.

Positions are written out here from each grouping's definition (the
model's einops patterns, by coordinates), independently of
`rollout.patch_groups`; the real-model test recomputes every step's
weights in numpy from the pixels.
"""
import itertools

import flax
import jax
import numpy as np
import pytest

from tests.layers.attention_reference import (
    np_dense, np_layer_norm, np_mhsa, np_params)
from vidjax.errors import VidjaxError
from vidjax.inference.explain import rollout
from vidjax.models import timesformer

T, GRID = 2, (2, 4)            # Frames, (h, w) patches: rows ≠ columns.
S = GRID[0] * GRID[1]
TARGET = (1, 0, 2)             # (t, y, x): frame 1, patch row 0, column 2.
COORDS = list(itertools.product(range(T), range(GRID[0]), range(GRID[1])))


def position(how, t, y, x):
  """(group index, position in the group) of patch (t, y, x) in the layout
  the model sows step `how` (vidjax/models/timesformer.py, `_group`)."""
  h, w = GRID
  if how == 'time':
    return (y * w + x,), t
  if how == 'frame':
    return (t,), y * w + x
  if how == 'all':
    return (0,), t * S + y * w + x
  if how == 'row':
    return (t, y), x
  if how == 'column':
    return (t, x), y
  if how == 'local':           # 'n t (i a) (j b) -> n i j (t a b)'
    a, b = h // 2, w // 2
    return (y // a, x // b), (t * a + y % a) * b + x % b
  if how == 'global':          # 'n (t p) (a q) (b r) -> n p q r (t a b)'
    return (t % 2, y % 2, x % 2), ((t // 2) * (h // 2) + y // 2) * (
        w // 2) + x // 2
  raise ValueError(how)


def group_shape(how):
  groups = {position(how, *c)[0] for c in COORDS}
  lead = tuple(max(g[i] for g in groups) + 1 for i in range(len(
      next(iter(groups)))))
  return lead, sum(1 for c in COORDS if position(how, *c)[0] == (0,) * len(
      lead))


def identity_blocks(scheme, depth=1):
  """Every step's weights the identity (each token attends to itself)."""
  blocks = []
  for _ in range(depth):
    block = {}
    for prefix, how in timesformer.STEPS[scheme]:
      lead, length = group_shape(how)
      length += how != 'time'
      block[prefix] = np.broadcast_to(np.eye(length),
                                      (*lead, length, length)).copy()
    blocks.append(block)
  return blocks


def point(weights, group, row, column):
  weights[group][row] = 0.0
  weights[group][row, column] = 1.0


@pytest.mark.parametrize('scheme', timesformer.SCHEMES)
def test_class_token_attending_one_patch_puts_the_mass_there(scheme):
  # In the last step, one group's class-token copy attends only to patch
  # (t=1, y=0, x=2); everything else attends to itself. The rollout's map
  # holds the class token's half of that group's share there and nothing
  # anywhere else: 0.5 / number of groups (space-only: 0.5 / T, each
  # frame's class token starting with 1/T).
  blocks = identity_blocks(scheme)
  prefix, how = timesformer.STEPS[scheme][-1]
  group, column = position(how, *TARGET)
  point(blocks[0][prefix], group, 0, 1 + column)
  result = rollout.rollout(blocks, scheme, T, GRID)
  groups = int(np.prod(blocks[0][prefix].shape[:-2]))
  share = 1 / T if scheme == 'space_only' else 1 / groups
  want = np.zeros((T, *GRID))
  want[TARGET] = 0.5 * share
  np.testing.assert_allclose(result.cls_map, want, atol=1e-15)
  assert result.cls_self == pytest.approx(1 - 0.5 * share)
  assert np.unravel_index(result.cls_map.argmax(), want.shape) == TARGET


def test_divided_layers_multiply_from_the_output_down():
  # Block 1 (the output side): frame 0's class token → patch (0, 0, 0).
  # Block 0: in frame 0, patch (0, 0) → patch (1, 3). Rolled out from the
  # output, the class token's 1/6 at (0, 0, 0) halves onto (0, 1, 3); the
  # other order would leave it at (0, 0, 0) alone.
  blocks = identity_blocks('divided_space_time', depth=2)
  point(blocks[1][''], (0,), 0, 1 + 0)
  point(blocks[0][''], (0,), 1 + 0, 1 + 1 * GRID[1] + 3)
  result = rollout.rollout(blocks, 'divided_space_time', T, GRID)
  want = np.zeros((T, *GRID))
  want[0, 0, 0] = want[0, 1, 3] = 1 / 8
  np.testing.assert_allclose(result.cls_map, want, atol=1e-15)
  assert result.cls_self == pytest.approx(3 / 4)


def test_divided_temporal_maps_keep_frame_order():
  # The class token reaches patch (t=1, y=0, x=2) (1/4, as above); the
  # temporal step before it, at that patch position, has frame 1 attend
  # only to frame 0: half of the 1/4 moves to (0, 0, 2). The temporal
  # rollout there says output frame 1 draws half on input frame 0.
  blocks = identity_blocks('divided_space_time')
  t, y, x = TARGET
  point(blocks[0][''], (t,), 0, 1 + y * GRID[1] + x)
  point(blocks[0]['temporal_'], (y * GRID[1] + x,), 1, 0)
  result = rollout.rollout(blocks, 'divided_space_time', T, GRID)
  want = np.zeros((T, *GRID))
  want[1, 0, 2] = want[0, 0, 2] = 1 / 8
  np.testing.assert_allclose(result.cls_map, want, atol=1e-15)
  temporal = np.broadcast_to(np.eye(T), (*GRID, T, T)).copy()
  temporal[y, x] = [[1, 0], [0.5, 0.5]]
  np.testing.assert_allclose(result.temporal, temporal, atol=1e-15)


def test_temporal_maps_multiply_over_layers():
  blocks = identity_blocks('axial', depth=2)
  point(blocks[1]['temporal_'], (5,), 0, 1)    # Output side: 0 ← 1.
  point(blocks[0]['temporal_'], (5,), 1, 0)    # Input side: 1 ← 0.
  result = rollout.rollout(blocks, 'axial', T, GRID)
  m1 = np.array([[0.5, 0.5], [0, 1]])
  m0 = np.array([[1, 0], [0.5, 0.5]])
  np.testing.assert_allclose(result.temporal[1, 1], m1 @ m0, atol=1e-15)
  np.testing.assert_allclose(result.temporal[0, 0], np.eye(T), atol=1e-15)


def test_no_temporal_maps_without_a_temporal_step():
  for scheme in ('space_only', 'joint_space_time', 'local_global'):
    assert rollout.rollout(identity_blocks(scheme), scheme, T,
                           GRID).temporal is None


def test_weights_of_another_clip_shape_are_refused():
  blocks = identity_blocks('divided_space_time')
  with pytest.raises(VidjaxError, match=r"block 0 step 'attn' have shape "
                     r'\(2, 9, 9\); this clip and scheme give \(3, 9, 9\)'):
    rollout.rollout(blocks, 'divided_space_time', 3, GRID)


# ----------------------------------------------------- The real model.

TINY = dict(embed_dim=16, depth=1, num_heads=2, patch_size=8, image_size=32,
            num_frames=T, drop_path_rate=0.0, kernels='plain')
CLIP = (1, T, GRID[0] * 8, GRID[1] * 8, 3)


def randomised(tree, seed):
  """Every leaf random except the steps' output projections (`*fc`, zero
  as initialised): every step of the block then sees the block's input."""
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(tree)
  for path, leaf in flat.items():
    if any(p.endswith('fc') and p != 'fc' for p in path):
      flat[path] = np.zeros(leaf.shape, np.float32)
    else:
      flat[path] = (0.5 * rng.standard_normal(leaf.shape) +
                    (path[-1] == 'scale')).astype(np.float32)
  return flax.traverse_util.unflatten_dict(flat)


def np_inputs(p, clip):
  """The block's input in numpy: class token, {(t, y, x): token}."""
  # The 4x4 grid's position embedding resized to 2x4 (the model's own
  # resize, tested against torch in tests/models/test_timesformer.py).
  pos = np.asarray(timesformer.resize_pos_embed(p['pos_embed'], GRID))[0]
  time = p.get('time_embed', np.zeros((1, T, 1)))[0]
  patches = {}
  for t, y, x in COORDS:
    pixels = clip[0, t, y * 8:(y + 1) * 8, x * 8:(x + 1) * 8].reshape(-1)
    patches[t, y, x] = (np_dense(p['patch_embed'], pixels) +
                        pos[1 + y * GRID[1] + x] + time[t])
  return p['cls_token'][0, 0] + pos[0], patches


def token(c):
  t, y, x = c
  return 1 + t * S + y * GRID[1] + x


def np_step_matrix(p, how, space_only, cls, patches):
  """The step's head-averaged weights as one token-by-token matrix
  (token 0 the class token; space-only: tokens 0..T-1 its T copies)."""
  offset = T if space_only else 1
  size = offset + T * S
  dense = np.zeros((size, size))
  groups = {}
  for c in COORDS:
    groups.setdefault(position(how, *c)[0], []).append(c)
  ids = lambda group: [token(c) - 1 + offset for c in group]
  for group in groups.values():
    seq = np.stack([patches[c] for c in group])
    if how == 'time':
      weights = np_mhsa(p['attn'], np_layer_norm(p['norm'], seq), 2)[1]
      dense[np.ix_(ids(group), ids(group))] = weights.mean(0)
      continue
    seq = np.concatenate([cls[None], seq])
    weights = np_mhsa(p['attn'], np_layer_norm(p['norm'], seq), 2)[1]
    weights = weights.mean(0)
    own = [group[0][0] if space_only else 0] + ids(group)
    rows = own if space_only else own[1:]
    dense[np.ix_(rows, own)] = weights if space_only else weights[1:]
    if not space_only:                # Class token: mean of its copies.
      dense[0, own] += weights[0] / len(groups)
  if how == 'time':
    dense[:offset, :offset] = np.eye(offset)
  return dense


def with_residual(dense):
  return 0.5 * dense + 0.5 * np.eye(len(dense))


@pytest.mark.parametrize('scheme', timesformer.SCHEMES)
def test_sown_weights_are_in_the_order_rollout_reads(scheme):
  model = timesformer.TimeSformer(3, scheme=scheme, **TINY)
  clip = np.random.default_rng(0).uniform(-1, 1, CLIP).astype(np.float32)
  # Shapes only (no eager init), then every leaf drawn here.
  shapes = flax.linen.unbox(jax.eval_shape(model.init, jax.random.key(0),
                                           clip))
  variables = {'params': randomised(dict(shapes['params']), seed=1)}
  _, result = rollout.explain(model, variables, clip)

  p = np_params(variables['params'])
  cls, patches = np_inputs(p, clip)
  space_only = scheme == 'space_only'
  offset = T if space_only else 1
  steps = []
  for prefix, how in timesformer.STEPS[scheme]:
    block = p['blocks_0']
    step_params = {'attn': block[f'{prefix}attn'],
                   'norm': block[f'{prefix}norm1']}
    steps.append(np_step_matrix(step_params, how, space_only, cls, patches))
  flow = np.full(offset, 1 / offset)
  flow = np.concatenate([flow, np.zeros(T * S)])
  for dense in reversed(steps):
    flow = flow @ with_residual(dense)
  np.testing.assert_allclose(result.cls_map.reshape(-1), flow[offset:],
                             rtol=1e-4, atol=1e-6)
  assert result.cls_self == pytest.approx(flow[:offset].sum(), rel=1e-4)
  if result.temporal is not None:
    dense = with_residual(steps[0])
    for y, x in itertools.product(*map(range, GRID)):
      ids = [token((t, y, x)) for t in range(T)]
      np.testing.assert_allclose(result.temporal[y, x],
                                 dense[np.ix_(ids, ids)], rtol=1e-4,
                                 atol=1e-6)


def test_rollout_of_a_convolutional_model_is_refused():
  from vidjax.models import resnet  # pylint: disable=g-import-not-at-top
  with pytest.raises(VidjaxError, match=r'^attention rollout needs a '
                     r'TimeSformer; TSM has no attention \(use '
                     r'--method=gradcam\)$'):
    rollout.attention_of(resnet.TSM(3, depth=18, width=8), {}, None)
