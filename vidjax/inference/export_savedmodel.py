"""A model's functions as TF functions (jax2tf), gathered in one tf.Module.

jax2tf's native serialization: each function is the model's StableHLO in
one XlaCallModule op, lowered for `platforms` (a SavedModel made on a CPU
host serves on GPU and TPU too); the weights are tf.Variables shared by
every function, not constants copied into each. The batch is polymorphic
(`None` in the signature) unless a `batch_size` is given.

Signatures of a clip model (what `saved_model_cli show` lists):
  serving_default  clip [N, T, H, W, 3] float32 -> logits [N, classes],
                   features [N, C] (the pre-logits, `pre_logits`)
  metadata         () -> contract, export: the two JSON assets as strings
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
from jax.experimental import jax2tf
import jax.numpy as jnp
import tensorflow as tf

PLATFORMS = ('cpu', 'cuda', 'tpu')
BATCH = '(b, ...)'  # jax2tf's polymorphic leading axis.


def plain(model: nn.Module) -> nn.Module:
  """`model` with the portable ops ('plain' kernels, same parameters).

  The 'custom' kernels are XLA:CPU lowerings measured faster there; an
  export runs wherever TF or TFLite runs it, and TFLite cannot take them
  (a pointwise conv as a rank-5 dot_general has no tfl.batch_matmul).
  """
  if 'kernels' in {f.name for f in getattr(model, '__dataclass_fields__',
                                          {}).values()}:
    return model.clone(kernels='plain')
  return model


def pre_logits(model: nn.Module, variables, clip):
  """(logits [N, classes], features [N, C]): what the classifier reads.

  TimeSformer's normed class token; otherwise the last block's output
  averaged over time and space (ResNet: exactly the fc's input averaged
  over frames; Inception: the Mixed_5c features its head pools).
  """
  logits, features = model.apply(variables, clip, train=False,
                                 return_features=True)
  if 'features' in features:
    return logits, features['features']
  last = [v for v in features.values() if v.ndim == 5][-1]
  return logits, jnp.mean(last.astype(jnp.float32), axis=(1, 2, 3))


def to_tf(fn: Callable, num_inputs: int, *, polymorphic: bool,
          platforms: Sequence[str]) -> Callable:
  """jax2tf of `fn(variables, *inputs)`; inputs' leading axis polymorphic."""
  shapes = [None] + [BATCH if polymorphic else None] * num_inputs
  return jax2tf.convert(fn, polymorphic_shapes=shapes, with_gradient=False,
                        native_serialization_platforms=tuple(platforms))


class ExportModule(tf.Module):
  """The variables, and the functions that read them."""

  def __init__(self, variables):
    super().__init__(name='vidjax_export')
    self.model_variables = jax.tree.map(
        lambda a: tf.Variable(a, trainable=False), variables)


def clip_spec(batch_size: int | None, num_frames: int,
              crop_size: int) -> tf.TensorSpec:
  return tf.TensorSpec([batch_size, num_frames, crop_size, crop_size, 3],
                       tf.float32, name='clip')


def clip_function(module: ExportModule, model: nn.Module, *,
                  spec: tf.TensorSpec, platforms: Sequence[str]):
  """The tf.function clip -> {'logits', 'features'} (the pre-logits):
  one XlaCallModule for both, so one compilation where it runs."""
  both_tf = to_tf(lambda v, x: pre_logits(model, v, x), 1,
                  polymorphic=spec.shape[0] is None, platforms=platforms)

  @tf.function(autograph=False, input_signature=[spec])
  def serve(clip):
    logits, features = both_tf(module.model_variables, clip)
    return {'logits': logits, 'features': features}

  return serve


def add_clip_functions(module: ExportModule, model: nn.Module, *,
                       spec: tf.TensorSpec,
                       platforms: Sequence[str]) -> dict:
  """serving_default; returns the signatures (name -> concrete function)."""
  module.serve = clip_function(module, model, spec=spec, platforms=platforms)
  return {'serving_default': module.serve.get_concrete_function()}


def add_metadata(module: ExportModule, files: dict[str, str]) -> dict:
  """Assets (name -> path of a file to copy in) and the `metadata`
  signature returning their text, for callers that only run signatures;
  returns {'metadata': its concrete function}."""
  texts = {}
  module.assets = {}
  for name, path in files.items():
    module.assets[name] = tf.saved_model.Asset(path)
    with open(path) as f:
      texts[name.rsplit('.', 1)[0]] = f.read()

  @tf.function(autograph=False, input_signature=[])
  def metadata():
    return {key: tf.constant(text) for key, text in texts.items()}

  module.metadata = metadata
  return {'metadata': metadata.get_concrete_function()}
