"""TimeSformer (Bertasius et al., "Is Space-Time Attention All You Need for
Video Understanding?", ICML 2021) and the paper's five attention schemes.

A ViT on clips [N, T, H, W, 3]: every frame is cut into 16×16 patches, each
patch a token; a class token is prepended; blocks of attention and MLP; the
class token's final state, layer-normed, is classified. The schemes differ in
which tokens a token attends to within a block (the paper's Fig. 1):

  'space_only' (S)       each frame alone, with its own class token; the
                         tokens are averaged over the frames at the end
  'joint_space_time' (ST) all 1 + T·S tokens together
  'divided_space_time' (T+S, the default)  temporal attention over the T
                         tokens of each patch position, then spatial
                         attention over each frame's S patches and the class
                         token
  'local_global' (L+G)   local attention within T × H/2 × W/2 windows, then
                         a sparse global one over the tokens with the same
                         (t, h, w) parity: a stride of 2 in every dimension
  'axial' (T+W+H)        temporal, then along each row, then along each
                         column

Numerics follow the official code (facebookresearch/TimeSformer,
timesformer/models/vit.py; Hugging Face's `TimesformerModel` ports it): exact
erf GELU, LayerNorm eps 1e-6, a zero-initialised `temporal_fc` behind each
extra attention, the class token copied into every group of a grouped step
and its outputs averaged, drop-path linear over depth (0 → 0.1).

Layout. Patch tokens are kept as [N, T, S, D] (S = h·w patches, row-major)
with logical axes (batch, time, tokens, embed), and the class token apart,
[N, 1, D] ([N, T, 1, D] for space-only, one per frame). The official code
orders tokens `(h w t)`; attention does not depend on the order of the
tokens it attends over, so only the regroupings differ, and on a mesh with a
time axis the patch tokens stay split along T: the spatial step is local to
a time shard, and the temporal step moves the split from T to the patch
axis (an all-to-all) and back (docs/timesformer.md, "Sequence sharding").

The L+G and axial schemes are not in the official code; they are built from
the paper's text. Our choices: the class token joins every local, global,
row and column group (copied in, outputs averaged, as in the spatial step),
not the temporal one; each extra step has its own norm, attention and
zero-initialised output projection (`local_*`, `width_*`), the last step
using the ViT block's own `norm1`/`attn`, so ImageNet ViT weights map the
same way for every scheme. L+G needs even T, h and w.
"""
from __future__ import annotations

from collections.abc import Sequence
import functools
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from vidjax import kernels as kernels_lib
from vidjax.errors import VidjaxError
from vidjax.layers import attention as attention_lib
from vidjax.models.spec import ModelSpec
from vidjax.parallel import comparison
from vidjax.parallel import rules as rules_lib

SCHEMES = ('space_only', 'joint_space_time', 'divided_space_time',
           'local_global', 'axial')
REMAT = ('none', 'block')
PATCHES = ('batch', 'time', 'tokens', 'embed')

# The steps of each scheme's attention half, in order: (name prefix of its
# norm / attention / output projection, how tokens are grouped). The last
# step of every scheme uses the ViT block's own `norm1` and `attn` (prefix
# ''), with no output projection.
STEPS = {
    'space_only': (('', 'frame'),),
    'joint_space_time': (('', 'all'),),
    'divided_space_time': (('temporal_', 'time'), ('', 'frame')),
    'local_global': (('local_', 'local'), ('', 'global')),
    'axial': (('temporal_', 'time'), ('width_', 'row'), ('', 'column')),
}


def _layer_norm(name, dtype, param_dtype):
  return nn.LayerNorm(
      epsilon=attention_lib.LAYER_NORM_EPSILON, dtype=dtype,
      param_dtype=param_dtype,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones,
                                              ('embed',)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                             ('embed',)),
      name=name)


def _mesh_axes(entry) -> tuple[str, ...]:
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def _time_swap_spec(shape: tuple[int, ...]) -> P | None:
  """The temporal step's [N, S, T, D] split: S over the time axis, T whole.

  None (leave it to the partitioner) without a time axis of size > 1, when
  S does not divide by it, when T does not (`rules.fit_spec` has then put
  the time axis on the batch, so every patch position's frames are already
  on one device), or inside `comparison.partitioner_only()`.
  """
  found = rules_lib.mesh_axis_of('time')
  if found is None or not comparison.explicit_collectives():
    return None
  axis, shards = found
  batch, _, _, embed = nn.logical_to_mesh_axes(PATCHES,
                                               nn.get_logical_axis_rules())
  if (shape[1] % shards or shape[2] % shards
      or axis in _mesh_axes(batch) + _mesh_axes(embed)):
    return None
  return rules_lib.fit_spec(shape, P(batch, axis, None, embed),
                            dict(jax.sharding.get_abstract_mesh().shape))


def _split_patches(y: jax.Array) -> jax.Array:
  """[N, S, T, D] constrained to `_time_swap_spec`, if there is one.

  On a mesh with a time axis the patch tokens [N, T, S, D] are split along
  T, but attention over each patch position's T frames needs all of T on
  one device. Constraining the regrouped tensor to a split of the patch
  axis S instead makes the move an explicit all-to-all (and the constraint
  on the way back another); the attention then runs locally.
  """
  spec = _time_swap_spec(y.shape)
  return y if spec is None else jax.lax.with_sharding_constraint(y, spec)


def _sequences(x: jax.Array, spec: P | None):
  """[A, B, L, D] split as spec[:2] → ([A·B, L, D] split alike, undo).

  The attention layer runs on [..., L, D] by flattening its leading axes,
  and a flattened [A·B] cannot keep a split of both A and B (a device's
  rows of it would not be contiguous), so the partitioner gathers B. Here
  the sequences are ordered device-major instead ((A shard, B shard, A
  row, B row), transposes local to each device), so the flat axis is split
  over both mesh axes and attention stays local. Attention treats every
  sequence alike, so the order does not change its values; only dropout
  inside the attention layer (0 in every released model) would draw its
  masks for a permutation of the sequences. Without such a spec (one
  device, or one of A and B whole) this is the plain reshape.
  """
  a, b, l, d = x.shape
  mesh = jax.sharding.get_abstract_mesh()
  axes_a = _mesh_axes(spec[0]) if spec is not None and len(spec) > 0 else ()
  axes_b = _mesh_axes(spec[1]) if spec is not None and len(spec) > 1 else ()
  na = int(np.prod([mesh.shape[axis] for axis in axes_a]))
  nb = int(np.prod([mesh.shape[axis] for axis in axes_b]))
  if na == 1 or nb == 1 or a % na or b % nb:
    return x.reshape(a * b, l, d), lambda y: y.reshape(a, b, l, d)
  embed = spec[3] if len(spec) > 3 else None
  flat = P(axes_a + axes_b, None, embed)
  y = x.reshape(na, a // na, nb, b // nb, l, d).transpose(0, 2, 1, 3, 4, 5)
  y = jax.lax.with_sharding_constraint(y.reshape(a * b, l, d), flat)

  def undo(y):
    y = jax.lax.with_sharding_constraint(y, flat)
    y = y.reshape(na, nb, a // na, b // nb, l, d).transpose(0, 2, 1, 3, 4, 5)
    return jax.lax.with_sharding_constraint(y.reshape(a, b, l, d), spec)
  return y, undo


def _patches_spec(shape: tuple[int, ...]) -> P | None:
  """The mesh split of a [N, T, *, D] tensor under PATCHES, if on a mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return None
  return rules_lib.fit_spec(shape, nn.logical_to_mesh_axes(PATCHES, rules),
                            dict(mesh.shape))


def _group(x: jax.Array, how: str, grid: tuple[int, int]):
  """Patch tokens [N, T, S, D] → (groups [G..., L, D], undo)."""
  n, t, s, d = x.shape
  h, w = grid
  if how == 'time':        # Each patch position over its T frames.
    # Time-sharded: T split → S split (all-to-all), and back in `undo`.
    y = _split_patches(jnp.swapaxes(x, 1, 2))               # [N, S, T, D]

    def undo(y):
      y = jnp.swapaxes(_split_patches(y), 1, 2)
      if not comparison.explicit_collectives():
        return y
      return rules_lib.constrain(y, PATCHES)
    return y, undo
  if how == 'frame':       # Each frame over its S patches.
    return x, lambda y: y
  if how == 'all':
    return x.reshape(n, 1, t * s, d), lambda y: y.reshape(n, t, s, d)
  if how in ('row', 'column'):
    y = x.reshape(n, t, h, w, d)
    if how == 'column':
      y = jnp.swapaxes(y, 2, 3)                             # [N, T, w, h, D]
    def undo(z):
      if how == 'column':
        z = jnp.swapaxes(z, 2, 3)
      return z.reshape(n, t, s, d)
    return y, undo
  if how == 'local':
    # Windows of T × h/2 × w/2: one group per (window row, window column).
    pattern = ('n t (i a) (j b) d', 'n i j (t a b) d')
    sizes = dict(i=2, j=2, a=h // 2, b=w // 2)
  elif how == 'global':
    # Tokens of the same (t, h, w) parity: a stride of 2 along each axis.
    pattern = ('n (t p) (a q) (b r) d', 'n p q r (t a b) d')
    sizes = dict(p=2, q=2, r=2, t=t // 2, a=h // 2, b=w // 2)
  else:
    raise ValueError(f'unknown grouping {how!r}')
  y = einops.rearrange(x.reshape(n, t, h, w, d),
                       f'{pattern[0]} -> {pattern[1]}', **sizes)

  def undo(z):
    z = einops.rearrange(z, f'{pattern[1]} -> {pattern[0]}', **sizes)
    return z.reshape(n, t, s, d)
  return y, undo


class Block(nn.Module):
  """One TimeSformer block of `scheme`: its attention steps, then the MLP.

  Called with (cls, patches): cls [N, 1, D] (space-only: [N, T, 1, D]),
  patches [N, T, S, D]. Each step is
    residual + drop_path(attention(norm(group(tokens))))
  followed, for every step but the last, by a zero-initialised output
  projection `<prefix>fc` (the official `temporal_fc`; drop-path before it,
  as the official code). Grouped steps other than 'time' copy the class
  token into every group and average its outputs back.
  """
  scheme: str
  num_heads: int
  grid: tuple[int, int]
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.0
  sow_weights: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernels: str = 'custom'

  @nn.compact
  def __call__(self, cls, patches, train: bool = False):
    dim = patches.shape[-1]
    steps = STEPS[self.scheme]
    attention = functools.partial(
        attention_lib.MultiHeadSelfAttention, num_heads=self.num_heads,
        qkv_bias=self.qkv_bias,
        attention_dropout_rate=self.attention_dropout_rate,
        dropout_rate=self.dropout_rate, sow_weights=self.sow_weights,
        dtype=self.dtype, param_dtype=self.param_dtype, kernels=self.kernels)
    drop_path = functools.partial(self._drop_path, train=train)
    for index, (prefix, how) in enumerate(steps):
      last = index == len(steps) - 1
      norm = _layer_norm(f'{prefix}norm1', self.dtype, self.param_dtype)
      attend = attention(name=f'{prefix}attn')
      if how == 'frame' and self.scheme == 'space_only':
        # Each frame keeps its own class token.
        tokens = jnp.concatenate([cls, patches], axis=2)    # [N, T, 1+S, D]
        out = drop_path(attend(norm(tokens), train), rows=2)
        cls, patches = cls + out[:, :, :1], patches + out[:, :, 1:]
        continue
      groups, undo = _group(patches, how, self.grid)
      if how == 'time':
        # The class token sits out the temporal step (official).
        out = self._attend_local(attend, norm, groups, train,
                                 _time_swap_spec(groups.shape))
        out = undo(drop_path(out, rows=2))
        fc = self._out_proj(prefix, dim)
        patches = patches + attention_lib.dense_on_rows(fc, out)
        patches = rules_lib.constrain(patches, PATCHES)
        continue
      lead = groups.shape[:-2]
      copies = jnp.broadcast_to(
          cls.reshape(cls.shape[0], *(1,) * (len(lead) - 1), 1, dim),
          (*lead, 1, dim)).astype(groups.dtype)
      tokens = jnp.concatenate([copies, groups], axis=-2)
      if how == 'frame':
        # Each frame's tokens stay on the device holding its time shard.
        out = self._attend_local(attend, norm, tokens, train,
                                 _patches_spec(tokens.shape))
      else:
        out = attend(norm(tokens), train)
      out = drop_path(out, rows=len(lead))
      out_cls = out[..., :1, :].reshape(cls.shape[0], -1, dim).mean(
          1, keepdims=True)
      out_patches = undo(out[..., 1:, :])
      if not last:
        fc = self._out_proj(prefix, dim)
        out_cls = fc(out_cls)
        out_patches = attention_lib.dense_on_rows(fc, out_patches)
      cls, patches = cls + out_cls, patches + out_patches
      patches = rules_lib.constrain(patches, PATCHES)

    hidden = int(dim * self.mlp_ratio)
    mlp = attention_lib.Mlp(
        hidden, dropout_rate=self.dropout_rate, dtype=self.dtype,
        param_dtype=self.param_dtype, kernels=self.kernels, name='mlp')
    norm2 = _layer_norm('norm2', self.dtype, self.param_dtype)
    # One drop-path row per clip (space-only: per frame), shared by the
    # class token and the patches, as the official MLP on [B, L, D].
    keep = self._keep_mask(cls.shape[:cls.ndim - 2], train)
    cls = cls + self._masked(mlp(norm2(cls), train), keep)
    patches = patches + self._masked(mlp(norm2(patches), train), keep)
    return cls, rules_lib.constrain(patches, PATCHES)

  def _attend_local(self, attend, norm, x, train, spec):
    """attend(norm(x)) on [A, B, L, D] sequences split over A and B as
    `spec`, without a gather (`_sequences`). With sown weights, the plain
    call, so the maps keep their [A, B, heads, L, L] layout."""
    if spec is None or self.sow_weights:
      return attend(norm(x), train)
    flat, undo = _sequences(x, spec)
    return undo(attend(norm(flat), train))

  def _keep_mask(self, rows: tuple[int, ...], train: bool):
    """Stochastic depth's kept rows, or None when nothing is dropped."""
    if not train or self.drop_path_rate == 0.0:
      return None
    return jax.random.bernoulli(self.make_rng('dropout'),
                                1.0 - self.drop_path_rate, rows)

  def _masked(self, x, keep):
    if keep is None:
      return x
    keep = keep.reshape(keep.shape + (1,) * (x.ndim - keep.ndim))
    return jnp.where(keep, x / (1.0 - self.drop_path_rate), 0).astype(x.dtype)

  def _drop_path(self, x, *, rows: int, train: bool):
    """timm's drop_path with a row per attention sequence: the leading
    `rows` axes, as the official (b h w) / (b t) batches of its steps."""
    return self._masked(x, self._keep_mask(x.shape[:rows], train))

  def _out_proj(self, prefix, dim):
    return attention_lib.Dense(
        dim, dtype=self.dtype, param_dtype=self.param_dtype,
        kernels=self.kernels,
        # Not ('embed', 'embed'): a name may map to a mesh axis only once.
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                                 (None, 'embed')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                               ('embed',)),
        name=f'{prefix}fc')


class TimeSformer(nn.Module):
  """TimeSformer classifier on NTHWC clips.

  Attributes:
    num_classes: logits size.
    scheme: one of SCHEMES.
    num_frames: T of the time embedding (8 for Base). Other clip lengths
      resize it as the official code (nearest); see `resize_time_embed`.
    image_size: the side the position embedding was made for (224 for Base
      and L, 448 for HR); other sizes resize it (nearest on the patch grid).
    patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the ViT.
    dropout_rate, attention_dropout_rate: 0 in the released models.
    drop_path_rate: the last block's; linear from 0 over depth (0.1).
    dtype: compute dtype (bf16 with float32 parameters); logits float32.
    remat: 'none' or 'block' (each block recomputed in the backward pass).
    sow_weights: sow every attention's weights (for maps and rollout).
    kernels: 'custom', 'plain' or 'auto' (by platform): the kernel set of
      the Dense products (vidjax/kernels/matmul.py). Same parameters and
      values up to float32 accumulation of bf16 products.
  """
  num_classes: int
  scheme: str = 'divided_space_time'
  num_frames: int = 8
  image_size: int = 224
  patch_size: int = 16
  embed_dim: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  dropout_rate: float = 0.0
  attention_dropout_rate: float = 0.0
  drop_path_rate: float = 0.1
  dtype: Any = None
  param_dtype: Any = jnp.float32
  remat: str = 'none'
  sow_weights: bool = False
  kernels: str = 'auto'

  def _check(self, video):
    if self.scheme not in SCHEMES:
      raise VidjaxError(f'unknown attention scheme {self.scheme!r}; known: '
                        f'{", ".join(SCHEMES)}')
    if self.remat not in REMAT:
      raise VidjaxError(f'unknown remat {self.remat!r}; known: '
                        f'{", ".join(REMAT)}')
    if self.embed_dim % self.num_heads:
      raise VidjaxError(f'embed_dim {self.embed_dim} is not divisible by '
                        f'num_heads={self.num_heads}')
    if video.ndim != 5:
      raise VidjaxError(f'TimeSformer takes clips [N, T, H, W, 3], got shape '
                        f'{video.shape}')
    _, t, h, w, _ = video.shape
    p = self.patch_size
    if h % p or w % p:
      raise VidjaxError(f'frames of {h}x{w} do not divide into {p}x{p} '
                        'patches')
    if self.scheme == 'local_global' and (t % 2 or (h // p) % 2 or
                                          (w // p) % 2):
      raise VidjaxError(
          f'local_global attention needs an even frame count and patch '
          f'grid, got {t} frames of {h // p}x{w // p} patches')

  @nn.compact
  def __call__(self, video: jax.Array, train: bool = False,
               return_features: bool = False):
    self._check(video)
    kernels = kernels_lib.resolve(self.kernels)
    n, t, h, w, _ = video.shape
    p, d = self.patch_size, self.embed_dim
    grid = (h // p, w // p)
    x = video.astype(self.dtype) if self.dtype else video
    x = rules_lib.constrain(x, rules_lib.VIDEO)
    # Patch embedding: a p×p conv of stride p on every frame, as a matmul
    # on the patches (the same products and sums).
    x = einops.rearrange(x, 'n t (i a) (j b) c -> n t (i j) (a b c)',
                         a=p, b=p)
    # Kernel [p·p·3, D] in (kh, kw, c) order: the conv's [D, 3, kh, kw]
    # transposed and flattened.
    x = attention_lib.Dense(
        d, dtype=self.dtype, param_dtype=self.param_dtype, kernels=kernels,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.lecun_normal(), (None, 'embed')),
        bias_init=nn.with_logical_partitioning(
            nn.initializers.zeros, ('embed',)),
        name='patch_embed')(x)
    x = rules_lib.constrain(x, PATCHES)

    init = attention_lib.default_kernel_init
    cls_token = self.param('cls_token', nn.with_logical_partitioning(
        init, (None, None, 'embed')), (1, 1, d), self.param_dtype)
    base_grid = self.image_size // p
    pos_embed = self.param('pos_embed', nn.with_logical_partitioning(
        init, (None, 'tokens', 'embed')), (1, 1 + base_grid ** 2, d),
                           self.param_dtype)
    pos_embed = resize_pos_embed(pos_embed, grid).astype(x.dtype)
    x = x + pos_embed[:, None, 1:]
    cls = (cls_token + pos_embed[:, :1]).astype(x.dtype)    # [1, 1, D]
    cls = jnp.broadcast_to(cls, (n, 1, d))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    if self.scheme == 'space_only':
      cls = jnp.broadcast_to(cls[:, None], (n, t, 1, d))
    else:
      time_embed = self.param('time_embed', nn.with_logical_partitioning(
          nn.initializers.zeros, (None, 'time', 'embed')),
                              (1, self.num_frames, d), self.param_dtype)
      x = x + resize_time_embed(time_embed, t).astype(x.dtype)[:, :, None]
      x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)

    block_cls = (nn.remat(Block, static_argnums=(3,))
                 if self.remat == 'block' else Block)
    rates = np.linspace(0, self.drop_path_rate, self.depth)
    for i in range(self.depth):
      cls, x = block_cls(
          self.scheme, self.num_heads, grid, mlp_ratio=self.mlp_ratio,
          qkv_bias=self.qkv_bias, dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          drop_path_rate=float(rates[i]), sow_weights=self.sow_weights,
          dtype=self.dtype, param_dtype=self.param_dtype, kernels=kernels,
          name=f'blocks_{i}')(cls, x, train)

    if self.scheme == 'space_only':
      # The official space-only model averages every token over the frames
      # before the final norm: only the class token's mean matters here.
      cls = cls.mean(axis=1)
    features = _layer_norm('norm', self.dtype, self.param_dtype)(cls[:, 0])
    logits = attention_lib.Dense(
        self.num_classes, dtype=self.dtype, param_dtype=self.param_dtype,
        kernels=kernels,
        kernel_init=nn.with_logical_partitioning(init, ('embed', 'classes')),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros,
                                               ('classes',)),
        name='head')(features).astype(jnp.float32)
    if return_features:
      return logits, {'features': features, 'patches': x, 'logits': logits}
    return logits


def resize_pos_embed(pos_embed: jax.Array,
                     grid: Sequence[int]) -> jax.Array:
  """The official resize of [1, 1 + g², D] to a (h, w) patch grid.

  Nearest-neighbour on the square grid, as `F.interpolate(mode='nearest')`
  in the official code (`_nearest_indices`).
  """
  size = pos_embed.shape[1] - 1
  g = int(round(size ** 0.5))
  if g * g != size:
    raise VidjaxError(f'pos_embed of {size} patch positions is not a square '
                      'grid')
  h, w = grid
  if (h, w) == (g, g):
    return pos_embed
  rows, cols = _nearest_indices(g, h), _nearest_indices(g, w)
  patches = pos_embed[:, 1:].reshape(1, g, g, -1)[:, rows][:, :, cols]
  return jnp.concatenate(
      [pos_embed[:, :1], patches.reshape(1, h * w, -1)], axis=1)


def resize_time_embed(time_embed: jax.Array, frames: int) -> jax.Array:
  """[1, T0, D] → [1, frames, D], nearest as the official code."""
  t0 = time_embed.shape[1]
  if frames == t0:
    return time_embed
  return time_embed[:, _nearest_indices(t0, frames)]


def _nearest_indices(size_in: int, size_out: int) -> np.ndarray:
  """torch's F.interpolate(mode='nearest') source indices.

  floor(i · float32(size_in / size_out)), not the exact floor(i · in / out):
  the two differ at some sizes (14 → 46, 8 → 82), and checkpoints were
  trained with torch's.
  """
  if size_out == size_in:
    return np.arange(size_out)
  scale = np.float32(size_in) / np.float32(size_out)
  index = np.floor(np.arange(size_out, dtype=np.float32) * scale)
  return np.minimum(index.astype(np.int64), size_in - 1)


# -----------------------------------------------------------------------------
# The models of the family, by name (collected by vidjax/models/registry.py).
# -----------------------------------------------------------------------------

SIZES = {  # All ViT-B/16 (12 blocks of width 768, 12 heads).
    'base': dict(num_frames=8, image_size=224),
    'hr': dict(num_frames=16, image_size=448),
    'l': dict(num_frames=96, image_size=224),
}
# What a config may set (`config.model.*`). `sow_weights` is not among them:
# tools that read attention maps set it on the built model.
OPTIONS = ('scheme', 'num_frames', 'image_size', 'patch_size', 'embed_dim',
           'depth', 'num_heads', 'mlp_ratio', 'qkv_bias', 'dropout_rate',
           'attention_dropout_rate', 'drop_path_rate', 'dtype', 'param_dtype',
           'kernels', 'remat')


def _spec(name: str, size: str, scheme: str = 'divided_space_time'):
  return ModelSpec(name, TimeSformer, dict(scheme=scheme, **SIZES[size]),
                   family='timesformer', head='head',
                   # The official configs' DATA.MEAN/STD.
                   normalization='slowfast', option_names=OPTIONS)


SPECS = (
    # Base (8×224²); 'timesformer' is the paper's default, divided attention.
    _spec('timesformer', 'base'),
    _spec('timesformer_space', 'base', 'space_only'),
    _spec('timesformer_joint', 'base', 'joint_space_time'),
    _spec('timesformer_divided', 'base', 'divided_space_time'),
    _spec('timesformer_local_global', 'base', 'local_global'),
    _spec('timesformer_axial', 'base', 'axial'),
    # HR (16×448²).
    _spec('timesformer_hr', 'hr'),
    _spec('timesformer_hr_space', 'hr', 'space_only'),
    _spec('timesformer_hr_joint', 'hr', 'joint_space_time'),
    _spec('timesformer_hr_divided', 'hr', 'divided_space_time'),
    _spec('timesformer_hr_local_global', 'hr', 'local_global'),
    _spec('timesformer_hr_axial', 'hr', 'axial'),
    # L (96×224²).
    _spec('timesformer_l', 'l'),
    _spec('timesformer_l_space', 'l', 'space_only'),
    _spec('timesformer_l_joint', 'l', 'joint_space_time'),
    _spec('timesformer_l_divided', 'l', 'divided_space_time'),
    _spec('timesformer_l_local_global', 'l', 'local_global'),
    _spec('timesformer_l_axial', 'l', 'axial'),
)
