"""What a trained model looks at: attention rollout or Grad-CAM on a video.

  python -m vidjax.explain --checkpoint=DIR VIDEO... --out=DIR \\
      [--method=rollout|gradcam] [--layer=NAME] [--target=CLASS] \\
      [--format=png|gif] [--view=N]

The video is read as the checkpoint's contract says (vidjax/inference/
video_input.py: preparation's decoding, evaluation's views) and one view
is explained, by default the middle clip's centre crop (`--view` counts in
evaluation's order, clip * num_test_crops + crop).

  --method=rollout  (TimeSformer, the default for it) attention rollout
                    (rollout.py): where the class token's state comes
                    from, per frame and patch; divided and axial attention
                    also save the temporal steps' own rollout.
  --method=gradcam  (Inception, TSN/TSM, the default for them) Grad-CAM
                    (gradcam.py) of --target (default: the top class) at
                    --layer (default: the last conv block; an unknown name
                    lists the names that exist).

For each VIDEO, OUT/<name>.<method>.png (one column per shown frame, rows
input and overlay; up to 8 frames, evenly spaced) or .gif ([input |
overlay] per frame), and OUT/<name>.<method>.npz with the arrays behind
it: map [T, H, W] (the raw map at the view's size), frames [T, H, W, 3]
(the view in [0, 1] pixels), logits, class_index, class_name, score (its
softmax probability), and the method's own arrays (gradcam: cam at the
layer's size, weights, layer; rollout: cls_map [T, h, w], cls_self,
temporal [h, w, T, T] where the scheme has a temporal step). Each file is
written whole or not at all.

The request (method against the model, --layer, --target, --view) is
checked before any video is read. Videos are explained in order; the
first that cannot be read ends the run (files already written stay).
Bad input (a model without attention asked for rollout, a TimeSformer
asked for Grad-CAM, a layer that does not exist, an unreadable video, a
checkpoint without a contract, a full disk) prints one `vidjax: error:`
line, exit 1.
"""
from __future__ import annotations

from collections.abc import Sequence
import os

from absl import flags
import numpy as np

from vidjax import cli
from vidjax.errors import VidjaxError
from vidjax.inference import source_flags
from vidjax.inference import video_input
from vidjax.inference.explain import gradcam as gradcam_lib
from vidjax.inference.explain import overlay
from vidjax.inference.explain import rollout as rollout_lib
from vidjax.models import timesformer
from vidjax.tools import files

METHODS = ('rollout', 'gradcam')
USAGE = ('usage: python -m vidjax.explain --checkpoint=DIR VIDEO... '
         '--out=DIR')


def _define_flags(argv):
  fv = flags.FlagValues()
  holders = source_flags.define(fv, argv)
  holders.update(
      out=flags.DEFINE_string('out', None, 'Directory for the images and '
                              'arrays (made if missing).', flag_values=fv),
      method=flags.DEFINE_enum(
          'method', None, METHODS, 'rollout (TimeSformer) or gradcam '
          '(convolutional models); default: the model\'s.', flag_values=fv),
      layer=flags.DEFINE_string(
          'layer', None, 'Grad-CAM: the named feature layer (default: the '
          'last conv block).', flag_values=fv),
      target=flags.DEFINE_string(
          'target', None, 'Grad-CAM: the class explained, an index or a '
          'name (default: the top class). Rollout does not depend on the '
          'class; there it only picks the class the title shows.',
          flag_values=fv),
      format=flags.DEFINE_enum('format', 'png', overlay.FORMATS,
                               'png (a grid) or gif.', flag_values=fv),
      view=flags.DEFINE_integer(
          'view', None, 'The view explained, in evaluation\'s order '
          '(default: the middle clip\'s centre crop).', lower_bound=0,
          flag_values=fv),
  )
  return fv, holders


def method_for(model, method: str | None) -> str:
  """The method asked for, or the model's: rollout for a TimeSformer."""
  if method is None:
    attention = isinstance(model, timesformer.TimeSformer)
    return 'rollout' if attention else 'gradcam'
  return method


def check_request(loaded, method: str, layer: str | None) -> str | None:
  """Refuses what cannot be done before any video is read; returns the
  Grad-CAM layer (the default named) or None for rollout."""
  if method == 'rollout':
    rollout_lib.check_model(loaded.model)
    if layer is not None:
      raise VidjaxError('--layer is for Grad-CAM; rollout goes through '
                        'every attention layer')
    return None
  model = gradcam_lib.check_model(loaded.model)
  c = loaded.contract
  shape = np.zeros((1, c.num_frames, c.crop_size, c.crop_size, 3),
                   np.float32)
  return gradcam_lib.resolve_layer(
      gradcam_lib.layers(model, loaded.variables, shape), layer)


def target_index(target: str | None, contract) -> int | None:
  """--target as a class index (a number or one of the class names)."""
  if target is None:
    return None
  names = list(contract.class_names or ())
  if target in names:
    return names.index(target)
  try:
    index = int(target)
  except ValueError:
    index = -1
  if not 0 <= index < contract.num_classes:
    raise VidjaxError(f'--target={target} is neither a class index '
                      f'(0..{contract.num_classes - 1}) nor a class name of '
                      'this checkpoint')
  return index


def default_view(contract) -> int:
  """The middle clip's centre crop."""
  return (contract.num_test_clips // 2) * contract.num_test_crops + (
      contract.num_test_crops // 2)


def check_view(view: int | None, contract) -> int:
  """--view, or the default; VidjaxError past the contract's views."""
  view = default_view(contract) if view is None else view
  if view >= contract.num_views:
    raise VidjaxError(f'--view={view} is not one of this checkpoint\'s '
                      f'views (0..{contract.num_views - 1})')
  return view


def read_view(path: str, contract, view: int) -> np.ndarray:
  """[1, T, crop, crop, 3]: one of evaluation's views of the video."""
  clip, crop = divmod(view, contract.num_test_crops)
  with video_input.VideoReader(path, contract) as reader:
    jpegs = [jpeg for _, jpeg in reader.encoded()]
  views = video_input.clip_views(jpegs, contract, clip_index=clip)
  return views[crop:crop + 1]


def explain_clip(loaded, clip: np.ndarray, method: str, *,
                 layer: str | None = None, target: int | None = None
                 ) -> tuple[np.ndarray, int, dict]:
  """(map [T, H, W], class explained, the method's arrays) of one clip."""
  model, variables = loaded.model, loaded.variables
  if method == 'gradcam':
    cam = gradcam_lib.gradcam(model, variables, clip, layer, target)
    return cam.upsampled, cam.target, dict(
        logits=cam.logits, cam=cam.cam, weights=cam.weights,
        layer=cam.layer)
  logits, result = rollout_lib.explain(model, variables, clip)
  chosen = int(np.argmax(logits)) if target is None else target
  arrays = dict(logits=logits, cls_map=result.cls_map,
                cls_self=result.cls_self)
  if result.temporal is not None:
    arrays['temporal'] = result.temporal
  heat = overlay.patch_upsampled(result.cls_map, model.patch_size)
  return heat, chosen, arrays


def _softmax(logits):
  e = np.exp(logits - logits.max())
  return e / e.sum()


def write(out_dir: str, name: str, method: str, fmt: str, clip, heat,
          chosen: int, arrays: dict, contract) -> list[str]:
  """The image and the .npz of one video; returns their paths."""
  frames = overlay.displayed(clip[0], contract.mean, contract.std)
  score = float(_softmax(np.asarray(arrays['logits'], np.float64))[chosen])
  label = contract.label(chosen)
  shown = overlay.normalised(heat)
  if fmt == 'png':
    title = f'{name}: {method}, class {label} (p={score:.3g})'
    image = overlay.png_grid(frames, shown, title)
  else:
    image = overlay.gif(frames, shown, _frame_rate(contract))
  stem = os.path.join(out_dir, f'{name}.{method}')
  arrays = dict(arrays, map=heat.astype(np.float32),
                frames=frames.astype(np.float32), class_index=chosen,
                class_name=label, score=score, method=method)
  files.write_bytes(f'{stem}.npz', overlay.npz(**arrays))
  files.write_bytes(f'{stem}.{fmt}', image)
  return [f'{stem}.npz', f'{stem}.{fmt}']


def _frame_rate(contract) -> float:
  """The view's frames per second (the clip samples every stride-th)."""
  fps = contract.fps if isinstance(contract.fps, (int, float)) else 25.0
  return fps / max(1, contract.frame_stride or 1)


def _make_out(path: str | None) -> str:
  if not path:
    raise VidjaxError(f'give the output directory with --out=DIR; {USAGE}')
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise VidjaxError(f'cannot make --out={path}: {e.strerror}') from None
  return path


def main(argv: Sequence[str]) -> int:
  """`python -m vidjax.explain ...` with argv[0] the program; returns 0."""
  argv = list(argv)
  fv, holders = _define_flags(argv)

  def explain_files(rest):
    videos = rest[1:]
    if not videos:
      raise VidjaxError(f'give a VIDEO file after the flags; {USAGE}')
    out_dir = _make_out(holders['out'].value)
    loaded = source_flags.load(holders)
    method = method_for(loaded.model, holders['method'].value)
    layer = check_request(loaded, method, holders['layer'].value)
    target = target_index(holders['target'].value, loaded.contract)
    view = check_view(holders['view'].value, loaded.contract)
    for path in videos:
      clip = read_view(path, loaded.contract, view)
      heat, chosen, arrays = explain_clip(loaded, clip, method, layer=layer,
                                          target=target)
      name = os.path.splitext(os.path.basename(path))[0]
      for written in write(out_dir, name, method, holders['format'].value,
                           clip, heat, chosen, arrays, loaded.contract):
        print(written)
    return 0

  # Its own FlagValues per call: main re-enters (the tests call it).
  return cli.run(explain_files, argv, flag_values=fv)
