"""Streaming inference with online TSM: one frame at a time, state carried.

  python -m vidjax.stream --config=configs/kinetics400_tsm_online.py \\
      --checkpoint=workdirs/k400_tsm_online video.mp4 [--top_k=5] [--every=25]

`--checkpoint` is either a trainer workdir (`python -m vidjax.main`; its
latest checkpoint in DIR/checkpoints is read) or a directory written by
`python -m vidjax.convert` (DIR/vidjax_model.json and DIR/variables); which
one is told by the files present. The config names the model
(`config.model_name`, options in `config.model`), which must be an online
TSM (`tsm_online_r{18,34,50,101}`: shift 'right', no temporal pooling), and
the frame geometry of its evaluation pipeline.

Per frame, as the evaluation pipeline sizes clips (vidjax/data/pipeline.py:
'resize_short_side' then the centre 'spatial_crops'): the short side is
resized to round(data.crop_size * data.eval_resize_ratio) (PyAV's area
filter when shrinking, bilinear when enlarging), the centre crop_size² is
cut and normalised with the preset the weights were trained with (see
`normalization`). The video is decoded frame by frame; it is never held in
memory.

What is printed every `--every` frames (and after the last frame): the
top-k classes of softmax(mean of the per-frame logits) over every frame fed
so far (`--window=W`: over the last W frames only; the official online demo
sums the last 12). A TSN/TSM clip's logits are the mean of its frames'
logits (the 'avg' consensus), so after n frames the prediction is exactly
the offline causal model's on those n frames; averaging logits rather than
probabilities is the official online demo's choice too. Then the frames
per second sustained end to end (decode, resize, normalise, step, copy of
the logits), measured from the end of the first frame, whose time is
mostly compilation, and the ETA from the frame count the container
declares. Class names come from `config.data.class_names_file` or a
prepared dataset of `config.data.name`; otherwise class indices.

Bad input (a config whose model cannot stream, a checkpoint of another
model, a video that cannot be decoded, ...) prints one
`vidjax: error: ...` line and exits 1 (`--verbose` shows the traceback).

For code (vidjax/streaming/): `online.make_stream_step(model)` is the
jitted step, `online.stream_video` the generator of per-frame results,
`frames.VideoFrames` the preprocessed frames of a file,
`checkpoint.load_checkpoint` the variables of a workdir or conversion.
"""
from collections.abc import Sequence
import math
import os
import sys

from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from vidjax import cli
from vidjax.errors import VidjaxError
from vidjax.models import registry
from vidjax.models import resnet
from vidjax.streaming.checkpoint import StreamCheckpoint
from vidjax.streaming.checkpoint import check_fits
from vidjax.streaming.checkpoint import load_checkpoint
from vidjax.streaming.checkpoint import num_classes_of
from vidjax.streaming.frames import VideoFrames
from vidjax.streaming.online import ONLINE_MODELS
from vidjax.streaming.online import StreamUpdate
from vidjax.streaming.online import check_streamable
from vidjax.streaming.online import init_state
from vidjax.streaming.online import make_stream_step
from vidjax.streaming.online import stream_video


def warn(message: str):
  """`vidjax: warning: ...` on stderr (a run that goes on)."""
  print(f'vidjax: warning: {" ".join(message.split())}', file=sys.stderr,
        flush=True)



def _section(config, key: str) -> ml_collections.ConfigDict:
  section = config.get(key)
  return ml_collections.ConfigDict() if section is None else section


def normalization(config, checkpoint: StreamCheckpoint, spec) -> tuple[
    tuple[float, ...], tuple[float, ...], str]:
  """(mean, std, what): the normalisation the weights were trained with.

  `data.mean`/`data.std` when the config sets both; else, for a trainer
  workdir, the config's `data.normalization` (what the trainer fed); for a
  conversion, the model's reference preset (its registry spec's
  `normalization`).
  """
  from vidjax.data import transforms  # pylint: disable=g-import-not-at-top
  data = _section(config, 'data')
  mean, std = data.get('mean'), data.get('std')
  if mean is not None and std is not None:
    return tuple(mean), tuple(std), 'config.data.mean/std'
  name = spec.normalization
  if checkpoint.kind == 'trainer' and data.get('normalization'):
    name = data.get('normalization')
  elif data.get('normalization') not in (None, name):
    warn(f'{checkpoint.directory} holds converted {spec.name} weights, which '
         f'expect {name!r} normalisation; using it, not the config\'s '
         f'data.normalization={data.get("normalization")!r}')
  if name not in transforms.NORMALIZATION:
    raise VidjaxError(f'unknown normalization {name!r}; known: '
                      f'{", ".join(sorted(transforms.NORMALIZATION))}')
  mean, std = transforms.NORMALIZATION[name]
  return tuple(mean), tuple(std), f'{name} normalisation'


def class_names(config, num_classes: int) -> tuple[str, ...] | None:
  """From data.class_names_file, else a prepared dataset; None if neither."""
  data = _section(config, 'data')
  names = None
  path = data.get('class_names_file')
  if path:
    try:
      with open(os.path.expanduser(path)) as f:
        names = [line.strip() for line in f]
    except OSError as e:
      raise VidjaxError(f'cannot read config.data.class_names_file {path}: '
                        f'{e.strerror or e}') from None
    while names and not names[-1]:
      names.pop()
    source = path
  elif data.get('name') and data.get('name') != 'tfrecord':
    source = f'dataset {data.get("name")}'
    try:
      from vidjax.data import builders  # pylint: disable=g-import-not-at-top
      builder = builders.get_builder(data.get('name'), data.get('data_dir'))
      # Prepared (or fixed) names only: never prepare a dataset here.
      names = list(builder.class_names)
    except Exception:  # pylint: disable=broad-except
      names = None
  if not names:
    return None
  if len(names) != num_classes:
    warn(f'{source} lists {len(names)} class names but the checkpoint has '
         f'{num_classes} classes; printing class indices')
    return None
  return tuple(names)


def _duration(seconds: float | None) -> str:
  if seconds is None or not math.isfinite(seconds):
    return '?'
  seconds = max(0, round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
  return f'{seconds // 60:02d}:{seconds % 60:02d}'


def format_top_k(probabilities: np.ndarray, k: int,
                 names: Sequence[str] | None) -> str:
  order = np.argsort(-probabilities, kind='stable')[:k]
  label = (lambda i: names[i]) if names else (lambda i: f'class {i}')
  return ', '.join(f'{label(i)} {probabilities[i]:.1%}' for i in order)


def format_update(update: StreamUpdate, total: int | None, k: int,
                  names: Sequence[str] | None) -> str:
  """'frame 50/250 | 31.2 frames/s, ETA 00:06 | top-5: a 41.0%, ...'."""
  width = len(str(total)) if total else 1
  count = f'frame {update.count:>{width}}/{total or "?"}'
  rate = update.frames_per_second
  if rate is None:
    speed = f'first frame {update.first_seconds:.2f} s (compiling)'
  else:
    left = None if total is None else max(total - update.count, 0) / rate
    speed = f'{rate:.1f} frames/s, ETA {_duration(left)}'
  return (f'{count} | {speed} | top-{k}: '
          f'{format_top_k(update.probabilities, k, names)}')


def run(config, checkpoint_dir: str, video: str, *, top_k: int = 5,
        every: int = 25, window: int = 0, frame_stride: int = 1,
        out=None) -> StreamUpdate:
  """What `python -m vidjax.stream` does; returns the last update."""
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top
  out = out or sys.stdout
  name = config.get('model_name')
  if not name:
    raise VidjaxError('the config sets no model_name')
  options = _section(config, 'model').to_dict()
  spec = registry.get_spec(name)
  if spec.factory is not resnet.TSM:  # Before its options are checked.
    raise VidjaxError(
        f'model {name!r} ({spec.family}) cannot stream: vidjax.stream runs '
        f"online TSM models (shift='right', past frames only): "
        f'{", ".join(ONLINE_MODELS)}')
  check_streamable(create_model(name, num_classes=1, **options), name)

  data = _section(config, 'data')
  crop = int(data.get('crop_size') or 224)
  ratio = float(data.get('eval_resize_ratio') or 256 / 224)
  if ratio < 1:
    raise VidjaxError(f'eval_resize_ratio must be >= 1 to centre-crop, got '
                      f'{ratio}')
  short = round(crop * ratio)

  checkpoint = load_checkpoint(checkpoint_dir)
  num_classes = num_classes_of(checkpoint.variables, spec.head)
  if num_classes is None:  # check_fits names what is there instead.
    num_classes = data.get('num_classes') or 1
  model = create_model(name, num_classes=num_classes, **options)
  check_fits(model, name, checkpoint)
  if checkpoint.kind == 'converted':
    from vidjax import convert  # pylint: disable=g-import-not-at-top
    convert.check_options(checkpoint.directory, model)
  if checkpoint.model_name and checkpoint.model_name != name:
    warn(f'{checkpoint.directory} holds {checkpoint.model_name!r} weights; '
         f'streaming them as the config\'s {name!r}')
  config_classes = data.get('num_classes')
  if config_classes and config_classes != num_classes:
    warn(f'config.data.num_classes={config_classes} but the checkpoint has '
         f'{num_classes} classes; using {num_classes}')
  mean, std, norm_text = normalization(config, checkpoint, spec)

  frames = VideoFrames(video, crop_size=crop, short_side=short, mean=mean,
                       std=std, frame_stride=frame_stride)
  with frames:
    names = class_names(config, num_classes)
    k = min(top_k, num_classes)
    variables = jax.device_put(checkpoint.variables)
    step = make_stream_step(model)
    state = init_state(model, variables, (1, crop, crop, 3))
    total = frames.num_frames
    fps = f'{frames.fps:.3g} fps, ' if frames.fps else ''
    what = ('mean logits of all frames so far' if not window else
            f'mean logits of the last {window} frames')
    print(f'{video}: {frames.width}x{frames.height}, {fps}'
          f'{total if total is not None else "?"} frames'
          f'{f" (one in {frame_stride} fed)" if frame_stride > 1 else ""} -> '
          f'short side {short}, centre {crop}x{crop}, {norm_text}\n'
          f'{name} ({num_classes} classes) from {checkpoint.describe()}; '
          f'prediction: softmax of the {what}', file=out, flush=True)
    last = None
    for last in stream_video(step, variables, frames, state, window=window):
      if last.count % every == 0:
        print(format_update(last, total, k, names), file=out, flush=True)
  if last.count % every:
    print(format_update(last, total, k, names), file=out, flush=True)
  rate, step_rate = last.frames_per_second, last.step_frames_per_second
  if rate is None:
    speed = 'one frame: no rate to measure'
  else:
    speed = f'{rate:.1f} frames/s end to end after the first (compiled) frame'
    if step_rate is not None:
      speed += f', the step alone {step_rate:.1f} frames/s'
  print(f'done: {last.count} frames in '
        f'{last.first_seconds + last.seconds:.2f} s (first frame '
        f'{last.first_seconds:.2f} s); {speed}\n'
        f'top-{k}: {format_top_k(last.probabilities, k, names)}',
        file=out, flush=True)
  return last



def _define_flags(argv: Sequence[str]) -> tuple[flags.FlagValues, dict]:
  """Flags of one invocation, on their own FlagValues: `main` re-enters."""
  fv = flags.FlagValues()
  holders = dict(
      config=config_flags.DEFINE_config_file(
          'config', None, 'Config file (configs/*.py) naming the online TSM '
          'model and the frame size; --config.key=value overrides.',
          flag_values=fv, lock_config=True, sys_argv=list(argv)),
      checkpoint=flags.DEFINE_string(
          'checkpoint', None, 'A trainer workdir (its latest checkpoint) or '
          'a python -m vidjax.convert output directory.', flag_values=fv),
      top_k=flags.DEFINE_integer('top_k', 5, 'Classes shown.', lower_bound=1,
                                 flag_values=fv),
      every=flags.DEFINE_integer('every', 25, 'Print the prediction every N '
                                 'frames (and after the last).',
                                 lower_bound=1, flag_values=fv),
      window=flags.DEFINE_integer(
          'window', 0, 'Average the logits of the last W frames; 0: of all '
          'frames so far.', lower_bound=0, flag_values=fv),
      frame_stride=flags.DEFINE_integer(
          'frame_stride', 1, 'Feed every S-th decoded frame (the shift then '
          'spans S source frames; the official online demo feeds every 2nd '
          'camera frame).', lower_bound=1, flag_values=fv),
  )
  flags.mark_flags_as_required(['config', 'checkpoint'], flag_values=fv)
  return fv, holders


def main(argv: Sequence[str]) -> int:
  """`python -m vidjax.stream ...` with argv[0] the program; returns 0.

  Errors print one `vidjax: error:` line and raise SystemExit(1).
  """
  argv = list(argv)
  fv, holders = _define_flags(argv)

  def stream_file(rest):
    if len(rest) != 2:
      got = ' '.join(rest[1:]) if len(rest) > 2 else 'none'
      raise VidjaxError(f'give one VIDEO file after the flags (got {got}); '
                        'usage: python -m vidjax.stream --config=CONFIG.py '
                        '--checkpoint=DIR VIDEO')
    run(cli.load_config(holders['config']), holders['checkpoint'].value,
        rest[1], top_k=holders['top_k'].value, every=holders['every'].value,
        window=holders['window'].value,
        frame_stride=holders['frame_stride'].value)
    return 0

  # Its own FlagValues per call: main re-enters (the tests call it).
  return cli.run(stream_file, argv, flag_values=fv)
