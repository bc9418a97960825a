"""Streaming inference with online TSM: one frame at a time, state carried.

  python -m vidjax.stream --checkpoint=workdirs/k400_tsm_online video.mp4 \\
      [--top_k=5] [--every=25] [--window=W] [--frame_stride=S]

`--checkpoint` is anything the loader reads (vidjax/inference/loader.py): a
trainer workdir (its latest checkpoint, or --which=best, --step=N), one
checkpoint step, or a `python -m vidjax.convert` output. The weights'
preprocessing contract names the model, which must be an online TSM
(`tsm_online_r{18,34,50,101}`: shift 'right', no temporal pooling), and
says how frames are made: `--config` is needed only for a checkpoint saved
before vidjax saved a contract (and, given, its clip settings replace the
saved ones); --fps, --short_side, --jpeg_quality and --class_names_file
fill in or override single fields.

Frames come from the shared video input (vidjax/inference/video_input.py):
decoded as preparation decoded the training videos (the contract's fps and
short side; with the contract's JPEG quality known, through the same JPEG
round trip as the prepared records), then each frame's centre view as
evaluation makes it (`frame_view`: short side to the contract's evaluation
size, centre crop, the contract's normalisation). The video is decoded
frame by frame; it is never held in memory.

What is printed every `--every` frames (and after the last frame): the
top-k classes of softmax(mean of the per-frame logits) over every frame fed
so far (`--window=W`: over the last W frames only; the official online demo
sums the last 12). A TSN/TSM clip's logits are the mean of its frames'
logits (the 'avg' consensus), so after n frames the prediction is exactly
the offline causal model's on those n frames; averaging logits rather than
probabilities is the official online demo's choice too. Then the frames
per second sustained end to end (decode, resize, normalise, step, copy of
the logits), measured from the end of the first frame, whose time is
mostly compilation, and the ETA from the video's declared length. Class
names come from the contract (or --class_names_file); otherwise class
indices.

Bad input (a model that cannot stream, a checkpoint without a contract, a
video that cannot be decoded, ...) prints one `vidjax: error: ...` line
and exits 1 (`--verbose` shows the traceback).

For code: `online.make_stream_step(model)` (vidjax/inference/online.py) is
the jitted step, `online.stream_video` the generator of per-frame results,
`frames(reader, contract)` the preprocessed frames of a file.
"""
from collections.abc import Iterator, Sequence
import math
import sys

from absl import flags
import jax
import numpy as np

from vidjax import cli
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib
from vidjax.inference import online
from vidjax.inference import source_flags
from vidjax.inference import video_input
from vidjax.models import registry
from vidjax.models import resnet


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


def format_update(update: online.StreamUpdate, total: int | None, k: int,
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


def check_model(contract: contract_lib.Contract, model):
  """Raises one VidjaxError unless the loaded model can stream."""
  spec = registry.get_spec(contract.model_name)
  if spec.factory is not resnet.TSM:
    raise VidjaxError(
        f'model {contract.model_name!r} ({spec.family}) cannot stream: '
        "vidjax.stream runs online TSM models (shift='right', past frames "
        f'only): {", ".join(online.ONLINE_MODELS)}')
  online.check_streamable(model, contract.model_name)


def frames(reader: video_input.VideoReader, contract: contract_lib.Contract,
           frame_stride: int = 1) -> Iterator[np.ndarray]:
  """Every `frame_stride`-th frame's centre view, float32 [crop, crop, 3]."""
  for index, (_, frame) in enumerate(reader.frames()):
    if index % frame_stride == 0:
      yield video_input.frame_view(frame, contract)


def _normalisation(contract: contract_lib.Contract) -> str:
  if contract.normalization:
    return f'{contract.normalization} normalisation'
  return (f'mean {list(contract.mean)} std {list(contract.std)} '
          'normalisation')


def run(loaded, video: str, *, top_k: int = 5, every: int = 25,
        window: int = 0, frame_stride: int = 1, out=None
        ) -> online.StreamUpdate:
  """What `python -m vidjax.stream` does with `loaded` weights
  (`loader.load`); returns the last update."""
  out = out or sys.stdout
  contract, model = loaded.contract, loaded.model
  check_model(contract, model)
  if frame_stride < 1:
    raise VidjaxError(f'frame_stride must be >= 1, got {frame_stride}')
  if contract.eval_resize_ratio < 1:
    raise VidjaxError(f'eval_resize_ratio must be >= 1 to centre-crop, got '
                      f'{contract.eval_resize_ratio}')
  crop, num_classes = contract.crop_size, contract.num_classes
  reader = video_input.VideoReader(
      video, contract, jpeg_roundtrip=contract.jpeg_quality is not None)
  with reader:
    names = contract.class_names
    k = min(top_k, num_classes)
    variables = jax.device_put(loaded.variables)
    step = online.make_stream_step(model)
    state = online.init_state(model, variables, (1, crop, crop, 3))
    total = (math.ceil(reader.num_frames / frame_stride)
             if reader.num_frames else None)
    what = ('mean logits of all frames so far' if not window else
            f'mean logits of the last {window} frames')
    jpeg = (f', JPEG q{contract.jpeg_quality}'
            if contract.jpeg_quality is not None else '')
    print(f'{video}: {reader.width}x{reader.height} at {reader.fps:.3g} fps'
          f'{jpeg}, {total if total is not None else "?"} frames'
          f'{f" (one in {frame_stride} fed)" if frame_stride > 1 else ""} -> '
          f'short side {contract.eval_short_side}, centre {crop}x{crop}, '
          f'{_normalisation(contract)}\n'
          f'{contract.model_name} ({num_classes} classes) from '
          f'{loaded.source.describe()}; prediction: softmax of the {what}',
          file=out, flush=True)
    last = None
    for last in online.stream_video(step, variables,
                                    frames(reader, contract, frame_stride),
                                    state, window=window):
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
  holders = source_flags.define(fv, argv)
  holders.update(
      top_k=flags.DEFINE_integer('top_k', 5, 'Classes shown.', lower_bound=1,
                                 flag_values=fv),
      every=flags.DEFINE_integer('every', 25, 'Print the prediction every N '
                                 'frames (and after the last).',
                                 lower_bound=1, flag_values=fv),
      window=flags.DEFINE_integer(
          'window', 0, 'Average the logits of the last W frames; 0: of all '
          'frames so far.', lower_bound=0, flag_values=fv),
      frame_stride=flags.DEFINE_integer(
          'frame_stride', 1, 'Feed every S-th frame (at the contract\'s fps; '
          'the shift then spans S frames; the official online demo feeds '
          'every 2nd camera frame).', lower_bound=1, flag_values=fv),
  )
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
                        'usage: python -m vidjax.stream --checkpoint=DIR '
                        'VIDEO')
    run(source_flags.load(holders), rest[1], top_k=holders['top_k'].value,
        every=holders['every'].value, window=holders['window'].value,
        frame_stride=holders['frame_stride'].value)
    return 0

  # Its own FlagValues per call: main re-enters (the tests call it).
  return cli.run(stream_file, argv, flag_values=fv)
