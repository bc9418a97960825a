"""The online TSM step as TF functions, its shift state explicit.

Signatures added to the SavedModel of an online TSM (tsm_online_r*):
  stream_step  frame [N, H, W, 3] float32 and one `state_<block>` tensor
               per shifted block -> logits [N, classes] (this frame's) and
               the new `state_<block>` tensors, under the same names
  init_state   batch_size (int32 scalar) -> the zero `state_<block>`
               tensors, the state before the first frame

A stream in TF:
  state = model.signatures['init_state'](batch_size=tf.constant(1))
  for frame in frames:
    out = model.signatures['stream_step'](frame=frame, **state)
    state = {k: v for k, v in out.items() if k != 'logits'}
The per-frame logits are the offline causal model's frame logits; their
running mean is its clip logits (vidjax/inference/online.py).

The state of block `layer2/block0` is `state_layer2_block0`, shaped
[N, 1, H', W', C'/shift_div]: the channels that block shifts from the
previous frame (export.json lists every name, block and shape).
"""
from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import tensorflow as tf

from vidjax.inference import export_savedmodel
from vidjax.models import resnet

PREFIX = 'state_'


def state_name(block: str) -> str:
  """'layer2/block0' -> 'state_layer2_block0' (a signature argument name)."""
  return PREFIX + block.replace('/', '_')


def state_shapes(model: nn.Module, variables,
                 crop_size: int) -> dict[str, tuple[int, ...]]:
  """Block name -> its state's shape without the batch axis, in block
  order."""
  state = jax.eval_shape(
      lambda v: resnet.init_stream_state(model, v,
                                         (1, crop_size, crop_size, 3)),
      variables)
  return {block: tuple(state[block].shape[1:]) for block in sorted(state)}


def step_function(module: export_savedmodel.ExportModule, model: nn.Module,
                  shapes: dict[str, tuple[int, ...]], *,
                  batch_size: int | None, crop_size: int,
                  platforms: Sequence[str]):
  """The tf.function (frame, *states) -> {logits, state_<block>...}."""
  blocks = list(shapes)
  names = [state_name(b) for b in blocks]

  def step(variables, frame, *states):
    logits, new = model.apply(variables, frame, train=False,
                              state=dict(zip(blocks, states)))
    return (logits, *(new[b] for b in blocks))

  step_tf = export_savedmodel.to_tf(
      step, 1 + len(blocks), polymorphic=batch_size is None,
      platforms=platforms)
  specs = [tf.TensorSpec([batch_size, crop_size, crop_size, 3], tf.float32,
                         name='frame')]
  specs += [tf.TensorSpec([batch_size, *shapes[b]], tf.float32, name=n)
            for b, n in zip(blocks, names)]

  @tf.function(autograph=False, input_signature=specs)
  def stream_step(*inputs):
    logits, *states = step_tf(module.model_variables, *inputs)
    return {'logits': logits, **dict(zip(names, states))}

  return stream_step


def add_stream_functions(module: export_savedmodel.ExportModule,
                         model: nn.Module,
                         shapes: dict[str, tuple[int, ...]], *,
                         batch_size: int | None, crop_size: int,
                         platforms: Sequence[str]) -> dict:
  """stream_step and init_state; returns the signatures."""
  stream_step = step_function(module, model, shapes, batch_size=batch_size,
                              crop_size=crop_size, platforms=platforms)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([], tf.int32, name='batch_size')])
  def init_state(batch_size):
    return {state_name(b): tf.zeros(tf.concat([[batch_size], shape], 0))
            for b, shape in shapes.items()}

  module.stream_step, module.init_state = stream_step, init_state
  return dict(stream_step=stream_step.get_concrete_function(),
              init_state=init_state.get_concrete_function())
