"""TimeSformer: every scheme's attention pattern and block against numpy,
counts against the paper, embedding resizes against torch's interpolate.

The numpy reference addresses tokens by (t, h, w) coordinates and builds each
step's groups from the scheme's rule (same patch position; same frame; same
T × h/2 × w/2 window; same (t, h, w) parity; same row; same column),
independently of the regroupings in vidjax/models/timesformer.py.
"""
import itertools

from absl.testing import parameterized
import chex
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.layers.attention_reference import (
    np_dense, np_gelu, np_layer_norm, np_mhsa, np_params)
from vidjax.errors import VidjaxError
from vidjax.kernels import KERNEL_SETS
from vidjax.models import create_model, timesformer
from vidjax.tools import profile

N, T, GRID, D, HEADS = 2, 4, (4, 4), 8, 2
TINY = dict(embed_dim=16, depth=2, num_heads=2, patch_size=8, image_size=32,
            num_frames=4, drop_path_rate=0.0)
CLIP = (2, 4, 32, 32, 3)

# Which patch tokens share a group, by coordinates (t, h, w).
RULES = {
    'time': lambda t, h, w: (h, w),
    'frame': lambda t, h, w: (t,),
    'all': lambda t, h, w: (),
    'local': lambda t, h, w: (h // (GRID[0] // 2), w // (GRID[1] // 2)),
    'global': lambda t, h, w: (t % 2, h % 2, w % 2),
    'row': lambda t, h, w: (t, h),
    'column': lambda t, h, w: (t, w),
}
COORDS = list(itertools.product(range(T), range(GRID[0]), range(GRID[1])))
# Each scheme's steps as the paper describes them: (parameter prefix, the
# grouping rule); the last step is the ViT block's own norm1/attn.
NP_STEPS = {
    'space_only': [('', 'frame')],
    'joint_space_time': [('', 'all')],
    'divided_space_time': [('temporal_', 'time'), ('', 'frame')],
    'local_global': [('local_', 'local'), ('', 'global')],
    'axial': [('temporal_', 'time'), ('width_', 'row'), ('', 'column')],
}


def groups_of(how):
  out = {}
  for c in COORDS:
    out.setdefault(RULES[how](*c), []).append(c)
  return list(out.values())


def randomised(tree, seed=1, scale=0.5):
  """Every leaf random (zero-initialised fc and norms too), so mix-ups show."""
  rng = np.random.default_rng(seed)
  flat = flax.traverse_util.flatten_dict(tree)
  for path, leaf in flat.items():
    value = scale * rng.standard_normal(leaf.shape)
    flat[path] = (value + (path[-1] == 'scale')).astype(np.float32)
  return flax.traverse_util.unflatten_dict(flat)


def np_block(p, scheme, cls, patches):
  """One block in numpy: cls [N, 1, D] (space-only [N, T, 1, D]), patches
  {(t, h, w): [N, D]} → the same after the scheme's steps and the MLP."""
  patches = dict(patches)
  steps = NP_STEPS[scheme]
  for index, (prefix, how) in enumerate(steps):
    norm, attn = p[f'{prefix}norm1'], p[f'{prefix}attn']
    fc = p.get(f'{prefix}fc') if index < len(steps) - 1 else None
    project = (lambda y: np_dense(fc, y)) if fc is not None else (
        lambda y: y)
    new = dict(patches)
    cls_updates = []
    for group in groups_of(how):
      for b in range(N):
        seq = np.stack([patches[c][b] for c in group])
        with_cls = how != 'time'
        if with_cls:
          own_cls = cls[b, group[0][0], 0] if scheme == 'space_only' else (
              cls[b, 0])
          seq = np.concatenate([own_cls[None], seq])
        out, _ = np_mhsa(attn, np_layer_norm(norm, seq), HEADS)
        if with_cls:
          cls_updates.append((b, group[0][0], project(out[0])))
          out = out[1:]
        for c, y in zip(group, out):
          new[c] = new[c].copy()
          new[c][b] = patches[c][b] + project(y)
    patches = new
    cls = cls.copy()
    if scheme == 'space_only':
      for b, t, update in cls_updates:
        cls[b, t, 0] += update
    elif cls_updates:
      for b in range(N):
        mine = [u for bb, _, u in cls_updates if bb == b]
        cls[b, 0] += np.mean(mine, axis=0)

  def mlp(y):
    y = np_layer_norm(p['norm2'], y)
    return np_dense(p['mlp']['fc2'], np_gelu(np_dense(p['mlp']['fc1'], y)))
  cls = cls + mlp(cls)
  patches = {c: v + mlp(v) for c, v in patches.items()}
  return cls, patches


class GroupingTest(parameterized.TestCase):

  @parameterized.parameters(*RULES)
  def test_groups_follow_the_rule_and_undo(self, how):
    coords = np.array(COORDS, np.float32).reshape(1, T, GRID[0] * GRID[1], 3)
    groups, undo = timesformer._group(jnp.asarray(coords), how, GRID)
    members = np.asarray(groups).reshape(-1, groups.shape[-2], 3)
    got = sorted(sorted(tuple(map(int, c)) for c in g) for g in members)
    want = sorted(sorted(g) for g in groups_of(how))
    self.assertEqual(got, want)
    chex.assert_trees_all_equal(undo(groups), coords)


class BlockTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*timesformer.SCHEMES)
  def test_block_matches_numpy(self, scheme):
    block = timesformer.Block(scheme, HEADS, GRID)
    rng = np.random.default_rng(0)
    cls_shape = (N, T, 1, D) if scheme == 'space_only' else (N, 1, D)
    cls = rng.standard_normal(cls_shape).astype(np.float32)
    patches = rng.standard_normal((N, T, GRID[0] * GRID[1], D)).astype(
        np.float32)
    params = randomised(nn.unbox(jax.eval_shape(
        block.init, jax.random.key(0), cls, patches))['params'])
    got_cls, got = self.variant(block.apply)({'params': params}, cls,
                                             patches)

    as_dict = {c: patches[:, c[0], c[1] * GRID[1] + c[2]].astype(np.float64)
               for c in COORDS}
    want_cls, want = np_block(np_params(params), scheme,
                              cls.astype(np.float64), as_dict)
    chex.assert_trees_all_close(got_cls, want_cls, rtol=1e-4, atol=1e-4)
    for c in COORDS:
      chex.assert_trees_all_close(got[:, c[0], c[1] * GRID[1] + c[2]], want[c],
                                  rtol=1e-4, atol=1e-4)

  def test_each_extra_step_has_its_own_zero_projection(self):
    names = {}
    for scheme in timesformer.SCHEMES:
      block = timesformer.Block(scheme, HEADS, GRID)
      cls = jnp.zeros((N, T, 1, D) if scheme == 'space_only' else (N, 1, D))
      params = nn.unbox(jax.eval_shape(block.init, jax.random.key(0), cls,
                                       jnp.zeros((N, T, 16, D))))['params']
      names[scheme] = sorted(params)
    # The extra steps' output projections start at zero (official
    # temporal_fc), so a fresh block is its last step alone.
    block = timesformer.Block('axial', HEADS, GRID)
    params = jax.jit(block.init)(jax.random.key(0), jnp.zeros((N, 1, D)),
                                 jnp.zeros((N, T, 16, D)))['params']
    for key in ('temporal_fc', 'width_fc'):
      chex.assert_trees_all_equal(nn.unbox(params[key]), jax.tree.map(
          jnp.zeros_like, nn.unbox(params[key])))
    self.assertEqual(names['divided_space_time'], [
        'attn', 'mlp', 'norm1', 'norm2', 'temporal_attn', 'temporal_fc',
        'temporal_norm1'])
    self.assertEqual(names['joint_space_time'], names['space_only'])
    self.assertIn('width_fc', names['axial'])
    self.assertIn('local_attn', names['local_global'])


class ModelTest(chex.TestCase):

  @parameterized.parameters(
      ('timesformer', 121_566_352, 196.05),
      ('timesformer_joint', 86_112_400, 179.71),
      ('timesformer_space', 86_106_256, 140.65),
  )
  def test_counts_equal_the_reference(self, name, params, gmacs):
    # Reference code at 8×224², 400 classes (REFERENCES.md; fvcore's MACs,
    # which count LayerNorms).
    result = profile.profile(name, frames=8, size=224, num_classes=400,
                             compile_forward=False)
    self.assertEqual(result['params'], params)
    self.assertEqual(round(result['macs'] / 1e9, 2), gmacs)

  def test_sizes(self):
    for name, frames, size in (('timesformer_hr', 16, 448),
                               ('timesformer_l', 96, 224)):
      model = create_model(name, num_classes=400)
      self.assertEqual((model.num_frames, model.image_size), (frames, size))
      self.assertEqual(model.scheme, 'divided_space_time')

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(*timesformer.SCHEMES)
  def test_forward(self, scheme):
    video = jnp.asarray(np.random.default_rng(0).normal(size=CLIP),
                        jnp.float32)
    model = timesformer.TimeSformer(5, scheme=scheme, **TINY)
    variables = jax.jit(model.init)(jax.random.key(0), video)
    logits = self.variant(model.apply)(variables, video)
    chex.assert_shape(logits, (2, 5))
    chex.assert_tree_all_finite(logits)

  def test_bfloat16_compute_follows_float32(self):
    # bf16 compute (float32 parameters) against the float32 model with the
    # same weights: logits and parameter gradients within bf16's precision
    # (8-bit mantissa, two blocks). Random weights, not the initial ones:
    # temporal_fc starts at zero, and its products must be exercised too.
    rng = np.random.default_rng(3)
    video = jnp.asarray(rng.normal(size=CLIP), jnp.float32)
    model = timesformer.TimeSformer(5, **TINY)
    params = nn.unbox(jax.jit(model.init)(jax.random.key(0), video))['params']
    params = jax.tree.map(
        lambda p: jnp.asarray(rng.normal(size=p.shape) * 0.2, p.dtype), params)
    labels = jnp.array([1, 3])

    def loss_and_grads(m):
      def loss(p):
        logits = m.apply({'params': p}, video)
        picked = jax.nn.log_softmax(logits)[jnp.arange(2), labels]
        return -jnp.mean(picked), logits
      return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    (_, logits32), grads32 = loss_and_grads(model)
    # Either kernel set: bf16 products accumulated in float32 ('custom',
    # vidjax/kernels/matmul.py) or lax.dot_general's bf16 dots ('plain').
    for kernels in KERNEL_SETS:
      (_, logits16), grads16 = loss_and_grads(
          model.clone(dtype=jnp.bfloat16, kernels=kernels))
      chex.assert_type([logits16, logits32], jnp.float32)
      scale = np.abs(np.asarray(logits32)).max()
      np.testing.assert_allclose(logits16, logits32, atol=0.02 * scale)
      # Per tensor (here at most 1.5%; a weight gradient paired with the
      # wrong rows is off by 20% or more).
      errors = jax.tree.map(
          lambda a, b: float(np.linalg.norm(a - b) / np.linalg.norm(b)),
          grads16, grads32)
      for path, error in jax.tree_util.tree_leaves_with_path(errors):
        self.assertLess(error, 0.05,
                        f'{kernels} {jax.tree_util.keystr(path)}')

  def test_divided_with_one_frame_is_space_only_at_initialisation(self):
    # A fresh divided model (temporal_fc and time_embed zero) on one frame
    # computes what the space-only model does with the same weights.
    video = jnp.asarray(np.random.default_rng(1).normal(
        size=(2, 1, 32, 32, 3)), jnp.float32)
    divided = timesformer.TimeSformer(5, **{**TINY, 'num_frames': 1})
    space = divided.clone(scheme='space_only')
    variables = divided.init(jax.random.key(0), video)
    shared = {'params': {k: v for k, v in variables['params'].items()}}
    space_params = nn.unbox(space.init(jax.random.key(0), video))['params']
    for i in range(TINY['depth']):
      block = dict(variables['params'][f'blocks_{i}'])
      for k in list(block):
        if k.startswith('temporal_'):
          del block[k]
      shared['params'][f'blocks_{i}'] = block
    del shared['params']['time_embed']
    chex.assert_trees_all_equal_shapes(nn.unbox(shared['params']),
                                       space_params)
    chex.assert_trees_all_close(space.apply(shared, video),
                                divided.apply(variables, video),
                                rtol=1e-5, atol=1e-6)

  def test_attention_weights_only_when_asked(self):
    video = jnp.zeros(CLIP)
    model = timesformer.TimeSformer(5, **TINY)
    variables = model.init(jax.random.key(0), video)
    _, state = model.apply(variables, video, mutable=['intermediates'])
    self.assertEmpty(state)
    _, state = model.clone(sow_weights=True).apply(
        variables, video, mutable=['intermediates'])
    maps = state['intermediates']['blocks_0']
    chex.assert_shape(maps['temporal_attn']['attention'][0],
                      (2, 16, 2, 4, 4))
    chex.assert_shape(maps['attn']['attention'][0], (2, 4, 2, 17, 17))

  def test_bad_input(self):
    model = timesformer.TimeSformer(5, **TINY)
    with self.assertRaisesRegex(VidjaxError, 'do not divide into 8x8'):
      model.init(jax.random.key(0), jnp.zeros((1, 4, 36, 32, 3)))
    with self.assertRaisesRegex(VidjaxError, 'not divisible by num_heads=5'):
      model.clone(num_heads=5).init(jax.random.key(0),
                                    jnp.zeros((1, 4, 32, 32, 3)))
    with self.assertRaisesRegex(VidjaxError, 'even frame count'):
      model.clone(scheme='local_global').init(jax.random.key(0),
                                              jnp.zeros((1, 3, 32, 32, 3)))
    with self.assertRaisesRegex(VidjaxError, 'unknown attention scheme'):
      model.clone(scheme='sparse').init(jax.random.key(0), jnp.zeros(CLIP))
    with self.assertRaisesRegex(VidjaxError, r'clips \[N, T, H, W, 3\]'):
      model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


class ResizeTest(parameterized.TestCase):

  @parameterized.parameters((14, (28, 28)), (14, (7, 10)), (4, (6, 3)),
                            (14, (46, 92)))
  def test_pos_embed_resize_is_torch_nearest(self, g, grid):
    torch = pytest.importorskip('torch')
    rng = np.random.default_rng(0)
    pos = rng.standard_normal((1, 1 + g * g, 6)).astype(np.float32)
    got = np.asarray(timesformer.resize_pos_embed(jnp.asarray(pos), grid))
    # The official code: the patch part as a [1, D, g, g] image through
    # F.interpolate(size=grid, mode='nearest'), the class position kept.
    image = torch.from_numpy(pos[0, 1:]).T.reshape(1, 6, g, g)
    want = torch.nn.functional.interpolate(image, size=grid, mode='nearest')
    want = want.reshape(6, -1).T.numpy()
    chex.assert_trees_all_equal(got[0, 0], pos[0, 0])
    chex.assert_trees_all_equal(got[0, 1:], want)

  @parameterized.parameters((8, 16), (8, 96), (16, 8), (8, 5), (8, 82))
  def test_time_embed_resize_is_torch_nearest(self, t0, frames):
    torch = pytest.importorskip('torch')
    embed = np.random.default_rng(1).standard_normal((1, t0, 4)).astype(
        np.float32)
    got = np.asarray(timesformer.resize_time_embed(jnp.asarray(embed),
                                                   frames))
    want = torch.nn.functional.interpolate(
        torch.from_numpy(embed).transpose(1, 2), size=frames,
        mode='nearest').transpose(1, 2).numpy()
    chex.assert_trees_all_equal(got, want)
