"""Size and cost of a model, without running it at full size.

  python -m vidjax.tools.profile --model=s3d_torchvision --frames=16 --size=224
  python -m vidjax.tools.profile --model=s3dg --frames=64 --size=224 --json

Prints parameters, multiply-accumulates of conv and dense layers (the papers'
and torchvision's "GFLOPs", see `vidjax.models.complexity`), XLA's
`cost_analysis` flops of the compiled forward (its own estimate for the
optimised program: 2 flops per MAC plus BN, pooling and activations, but on
XLA:CPU it leaves out convs handed to libraries, so it can come out below
2 × MACs), and the compiled forward's memory.
Compiling traces and optimises the program but executes nothing.
"""
from __future__ import annotations

import json

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from vidjax import cli
from vidjax.errors import VidjaxError
from vidjax.models import complexity
from vidjax.models import create_model

_MODEL = flags.DEFINE_string('model', None, 'Model name (see list_models()).')
_FRAMES = flags.DEFINE_integer('frames', 16, 'Clip length T.')
_SIZE = flags.DEFINE_integer('size', 224, 'Frame height and width.')
_BATCH = flags.DEFINE_integer('batch', 1, 'Batch size.')
_CHANNELS = flags.DEFINE_integer('channels', 3, '3 for RGB, 2 for flow.')
_NUM_CLASSES = flags.DEFINE_integer('num_classes', 400, 'Classifier size.')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object.')
_COMPILE = flags.DEFINE_bool(
    'compile', True, 'Compile the forward for cost_analysis and memory.')


def profile(model_name: str, *, frames: int, size: int, batch: int = 1,
            channels: int = 3, num_classes: int = 400,
            compile_forward: bool = True, **overrides) -> dict:
  """Counts of `model_name` on a [batch, frames, size, size, channels] clip."""
  model = create_model(model_name, num_classes=num_classes, **overrides)
  shape = (batch, frames, size, size, channels)
  variables = complexity.abstract_variables(model, shape)
  result = {
      'model': model_name,
      'input_shape': list(shape),
      'num_classes': num_classes,
      'params': complexity.count_params(variables['params']),
      'macs': complexity.forward_macs(model, variables, shape),
  }
  if compile_forward:
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    compiled = forward.lower(
        variables, jax.ShapeDtypeStruct(shape, jnp.float32)).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    result['xla_flops'] = float(cost.get('flops', float('nan')))
    memory = compiled.memory_analysis()
    if memory is not None:
      result['memory_bytes'] = {
          'arguments': int(memory.argument_size_in_bytes),
          'outputs': int(memory.output_size_in_bytes),
          'temporaries': int(memory.temp_size_in_bytes),
      }
  return result


def _format(r: dict) -> str:
  lines = [
      f'model        {r["model"]}  input {"x".join(map(str, r["input_shape"]))}'
      f'  classes {r["num_classes"]}',
      f'params       {r["params"]:,}',
      f'MACs         {r["macs"] / 1e9:.3f} G  (conv + dense multiply-adds; '
      'what papers call GFLOPs)',
  ]
  if 'xla_flops' in r:
    lines.append(f'XLA flops    {r["xla_flops"] / 1e9:.3f} G  (XLA\'s '
                 'cost_analysis of the compiled forward)')
  if 'memory_bytes' in r:
    m = r['memory_bytes']
    lines.append(f'memory       arguments {m["arguments"] / 2**20:.1f} MiB, '
                 f'temporaries {m["temporaries"] / 2**20:.1f} MiB '
                 '(compiled forward)')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not _MODEL.value:
    raise VidjaxError('--model is required')
  try:
    result = profile(_MODEL.value, frames=_FRAMES.value, size=_SIZE.value,
                     batch=_BATCH.value, channels=_CHANNELS.value,
                     num_classes=_NUM_CLASSES.value,
                     compile_forward=_COMPILE.value)
  except ValueError as e:  # A clip too small for the model, and such.
    raise VidjaxError(str(e)) from e
  print(json.dumps(result) if _JSON.value else _format(result))


if __name__ == '__main__':
  cli.run(main)
