"""A TF function as a TFLite flatbuffer, or why it cannot be.

Builtin ops first (what every TFLite runtime has), then with
SELECT_TF_OPS (needs the Flex delegate). When both refuse, `Refused`
names the op that stops the converter, the converter's reason and the
JAX op it came from (the StableHLO location jax2tf keeps), e.g.

  'tfl.batch_matmul' op found invalid output rank, expected 3 but got 5
  (from the JAX op InceptionVideoNet/Conv2d_2c_3x3_gating/gate/dot_general)

What refuses depends on the shapes (tensorflow 2.21): at batch 1 the
converter folds the size-1 axes of a Dense on [1, T, 1, 1, C] (Inception's
self-gating and head) into a rank-5 batch_matmul it cannot lower, which a
dynamic batch avoids; a dynamic batch in turn leaves TimeSformer a 7-D
transpose and the online TSM step a dynamic gather, which batch 1 avoids.
"""
from __future__ import annotations

import re

import tensorflow as tf

from vidjax import platform
from vidjax.errors import VidjaxError

OP_SETS = (
    ('builtin ops', (tf.lite.OpsSet.TFLITE_BUILTINS,)),
    ('builtin + SELECT_TF_OPS', (tf.lite.OpsSet.TFLITE_BUILTINS,
                                 tf.lite.OpsSet.SELECT_TF_OPS)),
)
_OP = re.compile(r"'([A-Za-z_][\w.]*)' op")
_JIT = re.compile(r'^jit\([^)]*\)/')


class Refused(Exception):
  """The converter refused with every op set; str(): `refusal`'s text."""


def convert(function, module: tf.Module) -> tuple[bytes, str]:
  """(flatbuffer, the op set that converted) of `function`.

  `module` holds the variables it reads. Raises `Refused`.
  """
  concrete = function.get_concrete_function()
  first = None
  for name, ops in OP_SETS:
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [concrete], module)
    converter.target_spec.supported_ops = set(ops)
    try:
      # The converter's MLIR diagnostics go to fd 2 as well as into the
      # error: a screen of locations each, for the one line below.
      with platform.captured_stderr():
        return converter.convert(), name
    except Exception as e:  # pylint: disable=broad-except
      # ConverterError, or what the MLIR passes raise on the way.
      first = first or e
  raise Refused(refusal(first)) from first


def refused_message(what: str, refusals: list[tuple[str, Refused]]) -> str:
  """One line for the refusals [(at what batch, why)] of `what`."""
  reasons = ', nor at '.join(f'{at}: {why}' for at, why in refusals)
  return (f'TFLite cannot convert {what} at {reasons}; tried '
          f'{" and ".join(n for n, _ in OP_SETS)} (the SavedModel itself '
          'exports: run without --tflite)')


def refusal(error: BaseException) -> str:
  """The converter's first error: its message and the JAX op behind it."""
  for item in getattr(error, 'errors', None) or ():
    message = ' '.join(item.error_message.split())
    if not message:
      continue
    if not _OP.search(message) and item.operator.name:
      message = f"'{item.operator.name}' op: {message}"
    origin = jax_op(item)
    return f'{message} (from the JAX op {origin})' if origin else message
  lines = [l.strip() for l in str(error).splitlines() if 'error:' in l]
  text = lines[0].split('error:', 1)[1] if lines else str(error)
  return ' '.join(text.split())[:300] or type(error).__name__


def jax_op(item) -> str | None:
  """The JAX name (module path / primitive) in an error's location."""
  calls = getattr(getattr(item, 'location', None), 'call', ())
  for call in calls:
    name = getattr(call, 'name', '')
    if name and not name.startswith('XlaCallModule'):
      return _JIT.sub('', name)
  return None
