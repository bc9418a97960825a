"""A model's layers by name: which exist, and their activations on a clip.

The names a user can ask `python -m vidjax.features --layer=` for are

  * the model's own named features (`return_features=True`): Inception's
    Conv2d_1a_7x7 ... Mixed_5c and its max-pools, ResNet's stages layer1 ...
    layer4 and frame_logits, TimeSformer's features and patches; logits;
  * the output of every module directly inside the model: each ResNet
    block (layer3/block5), each TimeSformer block (blocks_7/cls, its class
    token, and blocks_7/patches, its patch tokens), Inception's stem units
    (Conv2d_2b_1x1); dropout (the identity at inference) is left out, and
    where a module and a named feature share a name the feature wins;
  * `prelogits`: the input of the classifier (the spec's `head`), the
    vector whose affine map, averaged, gives the logits: Inception's
    pooled Mixed_5c positions, TSM's per-frame pooled layer4, TimeSformer's
    normed class token.

Module outputs and the classifier's input are recorded with
`flax.linen.intercept_methods`, on the model as it is: its outputs do not
change. (`capture_intermediates` records outputs only; the pre-logits are
an input.) Listing is an abstract trace (`jax.eval_shape`), no compute.

Pooling (`POOLS`): 'mean' averages every axis between the batch and the
channels (time, height, width, tokens) into one vector per clip, as the
models' own heads do; 'none' keeps the activation as it is.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidjax.errors import VidjaxError
from vidjax.models import registry
from vidjax.models import timesformer

PRELOGITS = 'prelogits'
POOLS = ('mean', 'none')
# Names of the parts of a module that returns a tuple.
_PARTS = {timesformer.Block: ('cls', 'patches')}


def for_inference(model: nn.Module) -> nn.Module:
  """`model` without rematerialisation (a backward-pass setting only)."""
  if getattr(model, 'remat', 'none') != 'none':
    return model.clone(remat='none')
  return model


def _parts(name: str, module_type: type, output) -> list[tuple[str, object]]:
  if not isinstance(output, tuple):
    return [(name, output)]
  labels = _PARTS.get(module_type, tuple(map(str, range(len(output)))))
  return [(f'{name}/{label}', part) for label, part in zip(labels, output)]


def _holds(value, tree) -> bool:
  return any(value is leaf for leaf in jax.tree.leaves(tree))


def _place(value, calls) -> tuple[int, int]:
  """Where a named feature sits among the calls: after the module that
  made it, else before the first that reads it (a max-pool's output),
  else at the end. Told by identity: the same traced array."""
  for i, (_, _, _, output) in enumerate(calls):
    if _holds(value, output):
      return i, 2
  for i, (_, _, args, _) in enumerate(calls):
    if _holds(value, args):
      return i, 0
  return len(calls), 0


def activations(model: nn.Module, variables, clips: jax.Array,
                head: str) -> dict[str, jax.Array]:
  """Every layer's activation on `clips`, by name, from input to output.

  `head` names the classifier module (`ModelSpec.head`). Traceable: under
  `jax.jit` only the layers a caller returns are computed.
  """
  calls = []  # (name, type, inputs, output) of the direct submodules.

  def record(call, args, kwargs, context):
    output = call(*args, **kwargs)
    module = context.module
    if context.method_name == '__call__' and len(module.path) == 1:
      calls.append((module.path[0], type(module), args, output))
    return output

  with nn.intercept_methods(record):
    _, features = model.apply(variables, clips, train=False,
                              return_features=True)
  # (call index, before 0 / at 1 / after 2, name, value): sorted, the
  # forward order.
  entries = []
  for i, (name, module_type, args, output) in enumerate(calls):
    if name == head:
      entries.append((i, 0, PRELOGITS, args[0]))
    elif module_type is not nn.Dropout:
      entries += [(i, 1, n, v) for n, v in _parts(name, module_type, output)]
  for name, value in features.items():
    entries = [e for e in entries if e[2] != name]  # The feature wins.
    entries.append((*_place(value, calls), name, value))
  entries.sort(key=lambda e: e[:2])  # Stable: ties keep their order.
  return {name: value for _, _, name, value in entries}


def _abstract_inputs(model: nn.Module, contract):
  clip = jax.ShapeDtypeStruct(
      (1, contract.num_frames, contract.crop_size, contract.crop_size, 3),
      jnp.float32)
  variables = jax.eval_shape(
      lambda x: nn.unbox(model.init(jax.random.key(0), x, train=False)), clip)
  return variables, clip


def list_layers(model: nn.Module, contract) -> dict[str, tuple[int, ...]]:
  """{name: shape of one clip's activation}, from input to output."""
  model = for_inference(model)
  head = registry.get_spec(contract.model_name).head
  variables, clip = _abstract_inputs(model, contract)
  names = []

  def trace(v, x):  # A list keeps the order (a dict's keys come sorted).
    found = activations(model, v, x, head)
    names.extend(found)
    return list(found.values())

  shapes = jax.eval_shape(trace, variables, clip)
  return {name: tuple(s.shape[1:]) for name, s in zip(names, shapes)}


def check_layer(name: str, layers: dict, model_name: str) -> str:
  """`name` if `layers` has it; else one VidjaxError listing them."""
  if name not in layers:
    raise VidjaxError(f'unknown layer {name!r} for model {model_name}; its '
                      f'layers: {", ".join(layers)}')
  return name


def check_pool(pool: str) -> str:
  if pool not in POOLS:
    raise VidjaxError(f'unknown pooling {pool!r}; want one of '
                      f'{", ".join(POOLS)}')
  return pool


def pool_activation(x: jax.Array, pool: str) -> jax.Array:
  """[N, ..., C] → [N, C] ('mean' over the middle axes) or as is."""
  if pool == 'mean' and x.ndim > 2:
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))
  return x


def pooled_shape(shape: tuple[int, ...], pool: str) -> tuple[int, ...]:
  """One clip's feature shape after `pool_activation`."""
  return shape[-1:] if pool == 'mean' else tuple(shape)


def make_extractor(model: nn.Module, model_name: str, layer: str,
                   pool: str, average_views: bool) -> Callable:
  """A jitted f(variables, views [B, V, T, H, W, 3]) → float32 features.

  [B, V, *shape] per view, or [B, *shape] averaged over the V views.
  """
  check_pool(pool)
  model = for_inference(model)
  head = registry.get_spec(model_name).head

  @jax.jit
  def extract(variables, views):
    b, v = views.shape[:2]
    clips = views.reshape(b * v, *views.shape[2:])
    x = activations(model, variables, clips, head)[layer]
    x = pool_activation(x.astype(jnp.float32), pool)
    x = x.reshape(b, v, *x.shape[1:])
    return jnp.mean(x, axis=1) if average_views else x

  return extract

