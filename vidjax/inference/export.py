"""A trained model as a TF SavedModel (jax2tf) and, on request, TFLite.

  python -m vidjax.export --checkpoint=DIR --out=OUT [--tflite]
      [--batch_size=N] [--overwrite]

OUT is a TF SavedModel (`tf.saved_model.load(OUT)`, `saved_model_cli`):
  saved_model.pb, variables/, fingerprint.pb
  assets/contract.json  the preprocessing contract (contract.py's JSON)
  assets/export.json    what is exported: every signature's inputs and
                        outputs with shapes, how to make the input from a
                        video, the stream state's names and shapes, the
                        weights' fingerprint and source, the versions
  model.tflite          with --tflite: the clip model, or
  stream_step.tflite    for an online TSM, its stream step (at batch 1, or
                        at any batch where batch 1 does not convert, or
                        at --batch_size)
Signatures: `serving_default` (clip -> logits and features, the
pre-logits), `metadata` (the two assets' text); an online TSM also
`stream_step` and `init_state` (export_stream.py). The clip is the
normalised [N, T, H, W, 3] float32 that evaluation feeds (T, H, W the
contract's frames and crop); N is polymorphic unless --batch_size.

Every family exports: the Inception family, TSN/TSM (and online TSM),
TimeSformer with each attention scheme. Exports use the 'plain' kernels
(export_savedmodel.plain). OUT is written whole or not at all, in a
sibling temporary directory swapped in at the end (convert/output.py);
an OUT that holds anything else is never replaced, an earlier export
only with --overwrite.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any
import warnings

import flax.linen as nn
import jax
import tensorflow as tf

from vidjax.convert import output
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib
from vidjax.inference import export_savedmodel
from vidjax.inference import export_stream
from vidjax.inference import export_tflite
from vidjax.inference import loader
from vidjax.models import resnet

FORMAT_VERSION = 1
CONTRACT_ASSET = 'contract.json'
EXPORT_ASSET = 'export.json'
TFLITE_CLIP = 'model.tflite'
TFLITE_STREAM = 'stream_step.tflite'
KIND = output.Kind(frozenset({
    'saved_model.pb', 'variables', 'assets', 'fingerprint.pb', TFLITE_CLIP,
    TFLITE_STREAM}), 'export')
# What the export needs of the contract to say how its input is made.
REQUIRED = ('fps', 'short_side')


def is_online(model: nn.Module) -> bool:
  """An online TSM: its step streams (vidjax/inference/online.py)."""
  return (isinstance(model, resnet.TSM) and model.shift == 'right'
          and not model.temporal_pool)


def _count(n: int, noun: str) -> str:
  return f'{n} {noun}{"" if n == 1 else "s"}'


def input_recipe(contract: contract_lib.Contract) -> str:
  """How to make the clip from a video, in words, from the contract."""
  c = contract
  fps = ("the video's own frame rate" if c.fps == contract_lib.SOURCE
         else f'{c.fps:g} fps')
  short = ('its own size' if c.short_side == contract_lib.SOURCE
           else f'short side {c.short_side}')
  jpeg = f', JPEG quality {c.jpeg_quality}' if c.jpeg_quality else ''
  if c.sampling == 'segments':
    frames = (f'{c.num_frames} frames, one from each of {c.num_frames} '
              'equal segments of the video')
  else:
    frames = f'{c.num_frames} consecutive frames, one every {c.frame_stride}'
  reverse = '; reverse their order' if c.reverse_time else ''
  return (
      f'Decode at {fps}, {short} (as the training records were '
      f'prepared{jpeg}); take {frames}{reverse}; resize the short side to '
      f'{c.eval_short_side}; cut the centre {c.crop_size}x{c.crop_size} '
      f'(the test protocol: {_count(c.num_test_clips, "clip")} x '
      f'{_count(c.num_test_crops, "crop")}, softmax averaged); scale RGB to '
      '[0, 1], subtract mean '
      f'{list(c.mean)}, divide by std {list(c.std)}; float32 '
      '[N, T, H, W, 3] (NTHWC).')


def _shape(shape: tf.TensorShape) -> list[int | None]:
  return shape.as_list()


def signature_table(signatures: dict) -> dict[str, Any]:
  """name -> {'inputs': {name: [shape, dtype]}, 'outputs': ...}."""
  table = {}
  for name, concrete in signatures.items():
    inputs = {s.name: [_shape(s.shape), s.dtype.name]
              for s in concrete.structured_input_signature[0]}
    outputs = {k: [_shape(t.shape), t.dtype.name]
               for k, t in sorted(concrete.structured_outputs.items())}
    table[name] = {'inputs': inputs, 'outputs': outputs}
  return table


def check_writable(out: str):
  """Raises unless a directory can be made beside `out` (where the export
  is written before it is renamed to `out`)."""
  parent = os.path.dirname(out)
  if os.path.lexists(parent) and not os.path.isdir(parent):
    raise VidjaxError(f'cannot write {out}: {parent} is not a directory')
  try:
    os.makedirs(parent, exist_ok=True)
    os.rmdir(tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.probe-',
                              dir=parent))
  except OSError as e:
    raise VidjaxError(f'cannot write {out}: {e.strerror or e}') from None


@contextlib.contextmanager
def converter_errors(what: str, polymorphic: bool):
  """jax2tf's refusal (a primitive it cannot serialise, a shape it cannot
  keep polymorphic) as one VidjaxError."""
  try:
    yield
  except VidjaxError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    text = str(e).strip().splitlines()
    line = ' '.join((text[0] if text else type(e).__name__).split())[:300]
    hint = ('; try a fixed --batch_size=N' if polymorphic else '')
    raise VidjaxError(f'jax2tf cannot export {what}'
                      f'{" with a polymorphic batch" if polymorphic else ""}'
                      f': {line}{hint}') from e


def _tflite(module, model, contract, shapes, batch_size: int | None,
            online: bool) -> tuple[bytes, dict[str, Any]]:
  """(flatbuffer, its export.json entry), for one platform (TFLite's own).

  At `batch_size`; without one at batch 1 (static shapes, what edge
  runtimes do best), else at any batch (export_tflite.py says which
  models need which).
  """
  crop, name = contract.crop_size, contract.model_name
  what = f'the {name} stream step' if online else name
  refusals = []
  for batch in (batch_size,) if batch_size else (1, None):
    if online:
      function = export_stream.step_function(
          module, model, shapes, batch_size=batch, crop_size=crop,
          platforms=('cpu',))
    else:
      function = export_savedmodel.clip_function(
          module, model, platforms=('cpu',),
          spec=export_savedmodel.clip_spec(batch, contract.num_frames, crop))
    try:
      flatbuffer, ops = export_tflite.convert(function, module)
      break
    except export_tflite.Refused as e:
      refusals.append((f'batch {batch}' if batch else 'any batch', e))
  else:
    raise VidjaxError(export_tflite.refused_message(what, refusals))
  with warnings.catch_warnings():  # Its deprecation, not the user's doing.
    warnings.simplefilter('ignore')
    runner = tf.lite.Interpreter(model_content=flatbuffer)
  return flatbuffer, {'file': TFLITE_STREAM if online else TFLITE_CLIP,
                      'batch_size': batch, 'ops': ops,
                      'signatures': runner.get_signature_list(),
                      # Why not at batch 1, when it fell back.
                      'refused': {at: str(why) for at, why in refusals}}


def export(loaded: loader.Loaded, out: str, *,
           batch_size: int | None = None, tflite: bool = False,
           overwrite: bool = False,
           platforms=export_savedmodel.PLATFORMS) -> dict[str, Any]:
  """Writes the SavedModel (and TFLite) of `loaded` to `out`.

  Returns what assets/export.json says. Raises VidjaxError for a
  contract that cannot say how to make the input, an `out` that may not
  be written, and an export the converters refuse.
  """
  where = loaded.source.describe()
  contract = loaded.contract.require(REQUIRED, where)
  out = os.path.abspath(os.path.expanduser(out))
  # Before the conversion, which takes a while.
  output.check_output(out, overwrite, KIND)
  check_writable(out)
  if batch_size is not None and batch_size < 1:
    raise VidjaxError(f'--batch_size must be >= 1, got {batch_size}')
  model = export_savedmodel.plain(loaded.model)
  name, crop = contract.model_name, contract.crop_size
  module = export_savedmodel.ExportModule(loaded.variables)
  online = is_online(model)
  shapes = {}
  flatbuffer, lite = None, {}
  with converter_errors(name, batch_size is None):
    if online:
      shapes = export_stream.state_shapes(model, loaded.variables, crop)
    if tflite:  # First: a refusal comes before the longer SavedModel work.
      flatbuffer, lite = _tflite(module, model, contract, shapes,
                                 batch_size, online)
    signatures = export_savedmodel.add_clip_functions(
        module, model, platforms=platforms,
        spec=export_savedmodel.clip_spec(batch_size, contract.num_frames,
                                         crop))
    if online:
      signatures.update(export_stream.add_stream_functions(
          module, model, shapes, batch_size=batch_size, crop_size=crop,
          platforms=platforms))

  info = {
      'format_version': FORMAT_VERSION,
      'model_name': name,
      'num_classes': contract.num_classes,
      'fingerprint': loaded.fingerprint,
      'source': where,
      'versions': {'jax': jax.__version__, 'tensorflow': tf.__version__},
      'platforms': list(platforms),
      'batch': 'polymorphic' if batch_size is None else batch_size,
      'input': {
          'signature': 'serving_default', 'name': 'clip',
          'shape': [batch_size, contract.num_frames, crop, crop, 3],
          'dtype': 'float32', 'layout': 'NTHWC',
          'how': input_recipe(contract)},
      'signatures': signature_table(signatures),
      **({'stream_state': [
          {'name': export_stream.state_name(b), 'block': b,
           'shape': [batch_size, *s]} for b, s in shapes.items()]}
         if online else {}),
      **({'tflite': lite} if tflite else {}),
  }

  def write(tmp: str):
    with tempfile.TemporaryDirectory() as meta:
      files = {CONTRACT_ASSET: contract.to_json(),
               EXPORT_ASSET: json.dumps(info, indent=2, sort_keys=True)}
      for file, text in files.items():
        with open(os.path.join(meta, file), 'w') as f:
          f.write(text + '\n')
      everything = {**signatures, **export_savedmodel.add_metadata(
          module, {f: os.path.join(meta, f) for f in files})}
      try:
        tf.saved_model.save(module, tmp, signatures=everything)
      except tf.errors.OpError as e:  # A write TF's C++ file system failed.
        raise OSError(None, ' '.join(e.message.split())) from e
    if flatbuffer is not None:
      with open(os.path.join(tmp, lite['file']), 'wb') as f:
        f.write(flatbuffer)

  output.write_directory(out, write, overwrite=overwrite, kind=KIND)
  return info
