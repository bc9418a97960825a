"""Grad-CAM (Selvaraju et al. 2017) for the convolutional families.

For a named layer's activations A [T', H', W', C] and a class's logit y:
the weights w_c = mean over (t, h, w) of dy/dA, the map
ReLU(Σ_c w_c · A_c) [T', H', W'], upsampled (trilinear) to the clip's
T × H × W.

Layers are the model's named features (`return_features=True`: Inception's
Conv2d_*/Mixed_*, ResNet's layer1..4) that some submodule outputs; the
gradient with respect to one is taken by adding a zero perturbation to
that submodule's output (`nn.intercept_methods`), so the models need no
hook of their own. The default layer is the last one, the last conv block.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.errors import VidjaxError
from vidjax.models import timesformer


@dataclasses.dataclass(frozen=True)
class GradCam:
  """Grad-CAM of one clip.

  Attributes:
    layer: the feature name explained.
    cam: [T', H', W'] at the layer's resolution (not normalised).
    upsampled: [T, H, W], the clip's size.
    weights: [C], the averaged gradients.
    logits: [classes].
    target: the class explained.
  """
  layer: str
  cam: np.ndarray
  upsampled: np.ndarray
  weights: np.ndarray
  logits: np.ndarray
  target: int


def without_remat(model):
  """The same model without rematerialisation (a training-memory option:
  the same parameters and values), whose submodules' outputs are the
  features themselves rather than values inside a checkpointed call."""
  if getattr(model, 'remat', 'none') != 'none':
    return model.clone(remat='none')
  return model


def check_model(model):
  """`model` without remat; VidjaxError for a model without conv maps."""
  if isinstance(model, timesformer.TimeSformer):
    raise VidjaxError('Grad-CAM needs a convolutional model; TimeSformer has '
                      'no conv feature maps (use --method=rollout)')
  return without_remat(model)


def layers(model, variables, clip) -> dict[str, tuple[str, ...]]:
  """{feature name: path of the submodule that outputs it}, in call order.

  The names are the 5-D ([N, T, H, W, C]) entries of the model's features
  that are some submodule's output (not a bare max-pool's).
  """
  model = check_model(model)
  found = {}

  def trace(variables, clip):
    outputs = []  # (output, module path) in call order; kept alive.

    def record(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      if context.method_name == '__call__':
        outputs.append((out, context.module.path))
      return out

    with nn.intercept_methods(record):
      _, features = model.apply(variables, clip, train=False,
                                return_features=True)
    for name, value in features.items():
      if getattr(value, 'ndim', 0) != 5:
        continue
      # The first module to output it: a later one may pass its input on
      # unchanged (a shift of 0 channels) and output the same array.
      path = next((p for out, p in outputs if out is value), None)
      if path is not None:
        found[name] = path
    return 0

  jax.eval_shape(trace, variables, clip)
  return found


def resolve_layer(names: dict, layer: str | None) -> str:
  """`layer`, or the last of `names` when None; VidjaxError if unknown."""
  if not names:
    raise VidjaxError('the model names no convolutional feature maps to '
                      'explain')
  if layer is None:
    return list(names)[-1]
  if layer not in names:
    raise VidjaxError(f'unknown layer {layer!r}; layers: '
                      f'{", ".join(names)}')
  return layer


def _adding(path: tuple[str, ...], delta):
  """An interceptor adding `delta` to the output of the module at `path`."""
  def intercept(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if context.method_name == '__call__' and context.module.path == path:
      out = out + delta
    return out
  return intercept


def cam_of(activations: jax.Array, gradients: jax.Array):
  """(ReLU(Σ_c w_c A_c) [T', H', W'], w [C]) of one clip's [T', H', W', C]."""
  weights = jnp.mean(gradients, axis=(0, 1, 2))
  return jax.nn.relu(jnp.einsum('thwc,c->thw', activations, weights)), weights


def gradcam(model, variables, clip, layer: str | None = None,
            target: int | None = None) -> GradCam:
  """Grad-CAM of one clip [1, T, H, W, 3] for class `target` (default: the
  top class) at `layer` (default: the last conv block)."""
  if clip.shape[0] != 1:
    raise ValueError(f'gradcam explains one clip, got {clip.shape[0]}')
  model = check_model(model)
  names = layers(model, variables, clip)
  layer = resolve_layer(names, layer)
  path = names[layer]
  logits_shape, features = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, return_features=True),
      variables, clip)
  shape = features[layer]
  num_classes = logits_shape.shape[-1]
  if target is not None and not 0 <= target < num_classes:
    raise VidjaxError(f'--target={target} is not a class of this model '
                      f'(0..{num_classes - 1})')

  @jax.jit
  def run(variables, clip, target):
    def score(delta):
      with nn.intercept_methods(_adding(path, delta)):
        logits, features = model.apply(variables, clip, train=False,
                                       return_features=True)
      logits = logits.astype(jnp.float32)
      chosen = jnp.where(target < 0, jnp.argmax(logits[0]), target)
      return logits[0, chosen], (features[layer], logits[0], chosen)

    zeros = jnp.zeros(shape.shape, shape.dtype)
    grads, (acts, logits, chosen) = jax.grad(score, has_aux=True)(zeros)
    cam, weights = cam_of(acts[0].astype(jnp.float32),
                          grads[0].astype(jnp.float32))
    upsampled = jax.image.resize(cam, clip.shape[1:4], 'linear')
    return cam, upsampled, weights, logits, chosen

  out = run(variables, clip, jnp.int32(-1 if target is None else target))
  cam, upsampled, weights, logits, chosen = map(np.asarray, out)
  return GradCam(layer=layer, cam=cam, upsampled=upsampled, weights=weights,
                 logits=logits, target=int(chosen))
