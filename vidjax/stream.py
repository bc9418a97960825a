"""Streaming inference with online TSM: one frame at a time, state carried.

  python -m vidjax.stream --config=configs/kinetics400_tsm_online.py \
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

For code: `make_stream_step(model)` is the jitted step, `stream_video` the
generator of per-frame results, `VideoFrames` the preprocessed frames of a
file, `load_checkpoint` the variables of a workdir or conversion.
"""
import os

# Before TensorFlow loads (configs import the data pipeline): its C++ info
# logs would bury the one-line errors (as vidjax/main.py).
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from vidjax import platform  # pylint: disable=g-import-not-at-top

platform.prefer_cpu_without_accelerator()

# pylint: disable=g-import-not-at-top,g-bad-import-order
import collections
from collections.abc import Iterable, Iterator, Mapping, Sequence
import dataclasses
import json
import math
import sys
import time
from typing import Any

from absl import flags
from absl import logging
import av
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
from ml_collections import config_flags

from vidjax import cli
from vidjax.data import video_io
from vidjax.errors import VidjaxError
from vidjax.models import registry
from vidjax.models import resnet

ONLINE_MODELS = tuple(f'tsm_online_r{d}' for d in sorted(resnet.DEPTHS))
CONVERTED_METADATA = 'vidjax_model.json'  # vidjax.convert.METADATA_FILE
TRAINER_CHECKPOINTS = 'checkpoints'  # vidjax/train/checkpoint.py
COLLECTIONS = ('params', 'batch_stats')


def warn(message: str):
  """`vidjax: warning: ...` on stderr (a run that goes on)."""
  print(f'vidjax: warning: {" ".join(message.split())}', file=sys.stderr,
        flush=True)


# -----------------------------------------------------------------------------
# The model and its step.
# -----------------------------------------------------------------------------


def check_streamable(model, name: str = ''):
  """Raises VidjaxError unless `model` is an online TSM that can stream."""
  name = repr(name) if name else type(model).__name__
  online = ', '.join(ONLINE_MODELS)
  if not isinstance(model, resnet.TSM):
    raise VidjaxError(
        f'model {name} cannot stream: vidjax.stream runs online TSM models '
        f"(shift='right', past frames only): {online}")
  if model.shift != 'right':
    why = ('reads the next frame (bidirectional shift)'
           if model.shift == 'bidirectional' else
           'has no temporal shift (TSN), so no stream state')
    raise VidjaxError(
        f"model {name} (shift={model.shift!r}) {why}; vidjax.stream runs "
        f"online TSM (shift='right'): {online}")
  if model.temporal_pool:
    raise VidjaxError(f'model {name} pools over time (temporal_pool=True), '
                      'which needs whole clips and cannot stream')


def make_stream_step(model):
  """The jitted `(variables, frame [N, H, W, 3], state) -> (logits, state)`.

  `state` is the explicit pytree of the shifted blocks' caches; start from
  `init_state` (zeros). An empty dict works too but is another pytree
  structure, so the second frame would compile the step again.
  """
  check_streamable(model)

  def step(variables, frame, state):
    return model.apply(variables, frame, train=False, state=state)

  return jax.jit(step)


def init_state(model, variables, frame_shape: Sequence[int]) -> dict:
  """The reset (zero) state for frames of `frame_shape` [N, H, W, 3]."""
  return resnet.init_stream_state(model, variables, tuple(frame_shape))


@dataclasses.dataclass(frozen=True)
class StreamUpdate:
  """What `stream_video` knows after each frame.

  Attributes:
    count: frames fed so far (1 after the first).
    logits: this frame's logits, [classes] ([N, classes] for batched
      frames).
    mean_logits: the mean of the per-frame logits over the window (all
      frames so far by default).
    probabilities: softmax(mean_logits): the running prediction.
    first_seconds: wall time of the first frame (mostly compilation).
    seconds: wall time from the end of the first frame to now.
    step_seconds: of which in the step (frames 2..count).
  """
  count: int
  logits: np.ndarray
  mean_logits: np.ndarray
  probabilities: np.ndarray
  first_seconds: float
  seconds: float
  step_seconds: float

  @property
  def frames_per_second(self) -> float | None:
    """End to end after the first frame; None before a second frame."""
    if self.count < 2 or self.seconds <= 0:
      return None
    return (self.count - 1) / self.seconds

  @property
  def step_frames_per_second(self) -> float | None:
    """The step alone, after the first frame."""
    if self.count < 2 or self.step_seconds <= 0:
      return None
    return (self.count - 1) / self.step_seconds


def _softmax(x: np.ndarray) -> np.ndarray:
  x = x - np.max(x, axis=-1, keepdims=True)
  e = np.exp(x)
  return e / np.sum(e, axis=-1, keepdims=True)


def stream_video(step, variables, frames: Iterable[np.ndarray], state, *,
                 window: int = 0) -> Iterator[StreamUpdate]:
  """Feeds `frames` one by one through `step`; yields after every frame.

  Args:
    step: `make_stream_step(model)`.
    variables: the model's {'params', 'batch_stats'}.
    frames: preprocessed float32 frames [H, W, 3] (or batches [N, H, W, 3]
      of N streams), e.g. a `VideoFrames`.
    state: the starting state (`init_state`), carried explicitly.
    window: average the logits of the last `window` frames; 0: all of them.

  Yields:
    A `StreamUpdate` per frame.
  """
  if window < 0:
    raise VidjaxError(f'window must be >= 0, got {window}')
  recent = collections.deque(maxlen=window or None)
  total = None
  count, first_seconds, step_seconds, t_first = 0, 0.0, 0.0, None
  start = time.perf_counter()
  for frame in frames:
    frame = np.asarray(frame, np.float32)
    single = frame.ndim == 3
    t0 = time.perf_counter()
    logits, state = step(variables, frame[None] if single else frame, state)
    logits = np.asarray(logits, np.float64)  # Waits for the step.
    now = time.perf_counter()
    logits = logits[0] if single else logits
    count += 1
    if t_first is None:
      t_first, first_seconds = now, now - start
    else:
      step_seconds += now - t0
    if window:
      recent.append(logits)
      mean = np.mean(recent, axis=0)
    else:
      total = logits if total is None else total + logits
      mean = total / count
    yield StreamUpdate(
        count=count, logits=logits.astype(np.float32),
        mean_logits=mean.astype(np.float32),
        probabilities=_softmax(mean).astype(np.float32),
        first_seconds=first_seconds, seconds=now - t_first,
        step_seconds=step_seconds)


# -----------------------------------------------------------------------------
# Frames of a video file.
# -----------------------------------------------------------------------------


def _ffmpeg_reason(error: Exception) -> str:
  return video_io._ffmpeg_reason(error)  # pylint: disable=protected-access


class VideoFrames:
  """Preprocessed frames of a video file, decoded one at a time (PyAV).

  Opening decodes the first frame, so a file that cannot give one fails
  here, before any model work. Iterate once; `close()` (or `with`) frees
  the decoder.

  Args:
    path: the video file.
    crop_size: side of the centre crop fed to the model.
    short_side: the short side frames are resized to first (>= crop_size).
    mean, std: per-channel normalisation of [0, 1] pixels.
    frame_stride: feed every `frame_stride`-th decoded frame.

  Attributes:
    fps: the stream's frame rate (None if unknown).
    width, height: the decoded frame size.
    num_frames: frames the iteration will yield, from the container's
      frame count or duration (None if it declares neither).

  Raises:
    VideoNotFoundError, VideoDecodeError (vidjax.data.video_io).
  """

  def __init__(self, path: str, *, crop_size: int, short_side: int,
               mean: Sequence[float], std: Sequence[float],
               frame_stride: int = 1):
    self.path = os.fspath(path)
    if short_side < crop_size:
      raise VidjaxError(f'short side {short_side} is smaller than the crop '
                        f'{crop_size}')
    if frame_stride < 1:
      raise VidjaxError(f'frame_stride must be >= 1, got {frame_stride}')
    self._crop, self._short, self._stride = crop_size, short_side, frame_stride
    std = np.asarray(std, np.float32)
    self._scale = 1.0 / (255.0 * std)
    self._offset = -np.asarray(mean, np.float32) / std
    if not os.path.exists(self.path):
      raise video_io.VideoNotFoundError(self.path, 'file not found')
    if os.path.isdir(self.path):
      raise video_io.VideoDecodeError(self.path,
                                      'is a directory, not a video file')
    if os.path.getsize(self.path) == 0:
      raise video_io.VideoDecodeError(self.path, 'empty file (0 bytes)')
    try:
      self._container = av.open(self.path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
      raise video_io.VideoDecodeError(
          self.path, 'cannot open (not a video, or corrupt?): '
          f'{_ffmpeg_reason(e)}') from None
    try:
      self._open_stream()
    except BaseException:
      self.close()
      raise

  def _open_stream(self):
    container = self._container
    if not container.streams.video:
      raise video_io.VideoDecodeError(self.path, 'no video stream')
    stream = container.streams.video[0]
    stream.thread_type = 'AUTO'
    self.fps = video_io._frame_rate(stream)  # pylint: disable=protected-access
    declared = stream.frames or 0
    if not declared and self.fps:
      duration = None
      if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
      elif container.duration is not None:
        duration = container.duration / av.time_base
      if duration:
        declared = round(duration * self.fps)
    self.num_frames = (math.ceil(declared / self._stride) if declared
                       else None)
    self._decoded = 0
    self._frames = container.decode(stream)
    self._first = self._next_frame()
    if self._first is None:
      raise video_io.VideoDecodeError(self.path, 'no decodable video frames')
    self.width, self.height = self._first.width, self._first.height
    self._out_hw = video_io.resized_shape(self.height, self.width,
                                          self._short)
    self._used = False

  def _next_frame(self):
    try:
      frame = next(self._frames)
    except StopIteration:
      return None
    except av.error.FFmpegError as e:
      raise video_io.VideoDecodeError(
          self.path, f'decoding failed after {self._decoded} frames '
          f'(truncated or corrupt): {_ffmpeg_reason(e)}') from None
    self._decoded += 1
    return frame

  def preprocess(self, frame) -> np.ndarray:
    """A PyAV frame → normalised float32 [crop, crop, 3]."""
    h, w = self._out_hw
    shrink = h * w < frame.height * frame.width
    rgb = frame.reformat(width=w, height=h, format='rgb24',
                         interpolation='AREA' if shrink else 'BILINEAR'
                         ).to_ndarray()
    y, x = (h - self._crop) // 2, (w - self._crop) // 2
    rgb = rgb[y:y + self._crop, x:x + self._crop]
    return rgb.astype(np.float32) * self._scale + self._offset

  def __iter__(self) -> Iterator[np.ndarray]:
    if self._used:
      raise VidjaxError(f'{self.path}: VideoFrames can be iterated once')
    self._used = True
    frame, index = self._first, 0
    self._first = None
    try:
      while frame is not None:
        if index % self._stride == 0:
          yield self.preprocess(frame)
        index += 1
        frame = self._next_frame()
    finally:
      self.close()

  def close(self):
    container, self._container = getattr(self, '_container', None), None
    if container is not None:
      container.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# -----------------------------------------------------------------------------
# Checkpoints: a trainer workdir or a vidjax.convert directory.
# -----------------------------------------------------------------------------


@dataclasses.dataclass
class Checkpoint:
  """Variables read from `directory`.

  Attributes:
    directory: as found (absolute).
    kind: 'trainer' (a workdir's latest checkpoint) or 'converted'.
    variables: {'params', 'batch_stats'} of numpy arrays.
    model_name: the model it was written for (a conversion's metadata, a
      workdir's config.json), None if unknown.
    step: the trainer step, None for a conversion.
  """
  directory: str
  kind: str
  variables: dict
  model_name: str | None = None
  step: int | None = None

  def describe(self) -> str:
    if self.kind == 'converted':
      return f'{self.directory} (converted checkpoint)'
    return f'{self.directory} (trainer checkpoint, step {self.step})'


def _trainer_dirs(directory: str) -> tuple[str, str] | None:
  """(workdir, its checkpoints dir) if `directory` is either of them."""
  inner = os.path.join(directory, TRAINER_CHECKPOINTS)
  if os.path.isdir(inner):
    return directory, inner
  names = os.listdir(directory)
  if any(n.isdigit() and os.path.isdir(os.path.join(directory, n))
         for n in names):
    return os.path.dirname(directory), directory
  return None


def _workdir_model_name(workdir: str) -> str | None:
  try:
    with open(os.path.join(workdir, 'config.json')) as f:
      name = json.load(f).get('model_name')
  except (OSError, ValueError, AttributeError):
    return None
  return name if isinstance(name, str) else None


def _restore_trainer(checkpoints: str) -> tuple[int, dict]:
  """(step, {'params', 'batch_stats'}) of the newest trainer checkpoint.

  The trainer saves its whole TrainState (vidjax/train/checkpoint.py);
  this reads only the variables, as host numpy arrays, whatever the mesh
  it was saved from (the optimizer state is never read).
  """
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  try:
    manager = ocp.CheckpointManager(
        checkpoints, options=ocp.CheckpointManagerOptions(create=False),
        item_handlers=ocp.PyTreeCheckpointHandler())
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(f'cannot read trainer checkpoints in {checkpoints}: '
                      f'{_first_line(e)}') from None
  try:
    step = manager.latest_step()
    if step is None:
      raise VidjaxError(f'no checkpoint in {checkpoints} (has training '
                        'saved one yet?)')
    try:
      metadata = manager.item_metadata(step)
      tree = getattr(metadata, 'tree', metadata)
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot read checkpoint step {step} in '
                        f'{checkpoints}: {_first_line(e)}') from None
    if not isinstance(tree, Mapping) or 'params' not in tree:
      raise VidjaxError(f'checkpoint step {step} in {checkpoints} is not a '
                        'vidjax trainer checkpoint (no params)')
    wanted = {k: tree[k] for k in COLLECTIONS if tree.get(k)}
    restore_args = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    try:
      restored = manager.restore(step, args=ocp.args.PyTreeRestore(
          wanted, restore_args=restore_args, partial_restore=True))
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot restore checkpoint step {step} in '
                        f'{checkpoints}: {_first_line(e)}') from None
  finally:
    manager.close()
  variables = {k: _plain(v) for k, v in restored.items()}
  variables.setdefault('batch_stats', {})
  return int(step), variables


def _plain(tree):
  if isinstance(tree, Mapping):
    return {k: _plain(v) for k, v in tree.items()}
  return np.asarray(tree)


def load_checkpoint(directory: str) -> Checkpoint:
  """The variables in a trainer workdir or a `vidjax.convert` directory.

  A directory with `vidjax_model.json` is a conversion; one with
  `checkpoints/` (or a `checkpoints` directory itself) a trainer workdir,
  whose latest step is read.
  """
  directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
  if not os.path.exists(directory):
    raise VidjaxError(f'checkpoint directory {directory} does not exist')
  if not os.path.isdir(directory):
    raise VidjaxError(f'--checkpoint={directory} is not a directory (want a '
                      'trainer workdir or a python -m vidjax.convert output)')
  if os.path.exists(os.path.join(directory, CONVERTED_METADATA)):
    from vidjax import convert  # pylint: disable=g-import-not-at-top
    try:
      name, _, variables = convert.restore_converted(directory)
    except VidjaxError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise VidjaxError(f'cannot restore the converted checkpoint in '
                        f'{directory}: {_first_line(e)}') from None
    variables = {k: variables.get(k, {}) for k in COLLECTIONS}
    return Checkpoint(directory, 'converted', variables, model_name=name)
  dirs = _trainer_dirs(directory)
  if dirs is None:
    raise VidjaxError(
        f'{directory} is neither a trainer workdir (no {TRAINER_CHECKPOINTS}/'
        f' inside) nor a python -m vidjax.convert output (no '
        f'{CONVERTED_METADATA})')
  workdir, checkpoints = dirs
  step, variables = _restore_trainer(checkpoints)
  return Checkpoint(directory, 'trainer', variables,
                    model_name=_workdir_model_name(workdir), step=step)


def _flat(tree, prefix=()) -> dict[tuple[str, ...], Any]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      out.update(_flat(value, prefix + (key,)))
    else:
      out[prefix + (key,)] = value
  return out


def describe_variables(variables) -> str:
  """'a ResNet-50 (bottleneck blocks, width 64, 400 classes)', or a hint."""
  params = variables.get('params', {})
  blocks = collections.Counter()
  for name in params:
    stage, _, block = name.partition('/')
    if stage.startswith('layer') and block.startswith('block'):
      blocks[stage] += 1
  counts = tuple(blocks[f'layer{s}'] for s in range(1, 5))
  bottleneck = 'conv3' in params.get('layer1/block0', {})
  depth = next((d for d, (kind, c) in resnet.DEPTHS.items()
                if c == counts and (kind == 'bottleneck') == bottleneck), None)
  if any(counts):
    width = _shape(params, 'conv1', 'kernel')
    classes = _shape(params, 'fc', 'kernel')
    what = (f'a ResNet-{depth}' if depth else
            f'a ResNet with {"/".join(map(str, counts))} blocks per stage')
    details = ['bottleneck blocks' if bottleneck else 'basic blocks']
    if width:
      details.append(f'width {width[-1]}')
    if classes:
      details.append(f'{classes[-1]} classes')
    return f'{what} ({", ".join(details)})'
  names = sorted(params)
  shown = ', '.join(names[:3]) + (', ...' if len(names) > 3 else '')
  return f'no ResNet (top-level modules: {shown or "none"})'


def _shape(params, *path):
  node = params
  for key in path:
    if not isinstance(node, Mapping) or key not in node:
      return None
    node = node[key]
  return tuple(node.shape)


def num_classes_of(variables, head: str = 'fc') -> int | None:
  shape = _shape(variables.get('params', {}), head, 'kernel')
  return shape[-1] if shape else None


def check_fits(model, model_name: str, checkpoint: Checkpoint):
  """Raises one VidjaxError unless the checkpoint fills `model` exactly."""
  # One frame through the stream path (no segment-count warning); the
  # variables' shapes do not depend on the frame size.
  abstract = nn.unbox(jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), state={})))
  want = {p: tuple(v.shape) for p, v in _flat(
      {k: abstract.get(k, {}) for k in COLLECTIONS}).items()}
  have = {p: tuple(np.shape(v)) for p, v in _flat(
      {k: checkpoint.variables.get(k, {}) for k in COLLECTIONS}).items()}
  if want == have:
    return
  problems = []
  for what, paths, other in (
      ('missing', [p for p in want if p not in have], have),
      ('unused', [p for p in have if p not in want], want)):
    # A block the other side lacks altogether (a deeper ResNet's extra
    # blocks) once, not each of its arrays; else the array's module.
    blocks = {p[:2] for p in other}
    modules = list(dict.fromkeys(
        '/'.join(p[:2] if p[:2] not in blocks else p[:-1]) for p in paths))
    if modules:
      problems.append(f'{what} {_listing(modules)}')
  shapes = [f'{"/".join(p)} {list(have[p])} (wants {list(s)})'
            for p, s in want.items() if p in have and have[p] != s]
  if shapes:
    problems.append(f'other shapes: {_listing(shapes)}')
  held = describe_variables(checkpoint.variables)
  if checkpoint.model_name:
    held = f'{checkpoint.model_name!r} weights, {held}'
  wanted = (f'a ResNet-{model.depth} (width {model.width}, '
            f'{model.num_classes} classes)')
  raise VidjaxError(
      f'checkpoint {checkpoint.directory} holds {held}, but the config\'s '
      f'model {model_name!r} is {wanted}: {"; ".join(problems)}')


def _listing(names: Sequence[str], shown: int = 4) -> str:
  more = len(names) - shown
  return ', '.join(names[:shown]) + (f' (+{more} more)' if more > 0 else '')


# -----------------------------------------------------------------------------
# The command line.
# -----------------------------------------------------------------------------


def _section(config, key: str) -> ml_collections.ConfigDict:
  section = config.get(key)
  return ml_collections.ConfigDict() if section is None else section


def normalization(config, checkpoint: Checkpoint, spec) -> tuple[
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


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return (text.splitlines()[0] if text else '') or type(error).__name__


def _root_cause(error: BaseException) -> BaseException:
  while error.__cause__ is not None:
    error = error.__cause__
  return error


def _message(error: BaseException) -> str:
  """One line for a flag, config or input error (as vidjax.main's)."""
  cause = _root_cause(error)
  if isinstance(cause, OSError) and cause.filename:
    return f'cannot read config file {cause.filename}: {cause.strerror}'
  if isinstance(cause, OSError) and 'Errno 2' in str(cause):
    lines = [l.strip() for l in str(cause).splitlines() if l.strip()]
    return f'cannot read config file: {lines[-1]}'
  if isinstance(cause, (KeyError, AttributeError)):
    return f"unknown config key '{str(cause).strip(chr(34) + chr(39))}'"
  return ' '.join(str(cause).split()) or type(cause).__name__


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
      verbose=flags.DEFINE_bool('verbose', False, 'Show tracebacks for user '
                                'errors.', flag_values=fv),
  )
  flags.mark_flags_as_required(['config', 'checkpoint'], flag_values=fv)
  return fv, holders


def main(argv: Sequence[str]) -> int:
  """`python -m vidjax.stream ...` with argv[0] the program; returns 0.

  Errors print one `vidjax: error:` line and raise SystemExit(1).
  """
  argv = list(argv)
  verbose = '--verbose' in argv
  fv, holders = _define_flags(argv)
  try:
    rest = fv(argv)
  except Exception as e:  # pylint: disable=broad-except
    if verbose:
      raise
    cli.exit_with_error(_message(e))
  if len(rest) != 2:
    got = ' '.join(rest[1:]) if len(rest) > 2 else 'none'
    cli.exit_with_error(f'give one VIDEO file after the flags (got {got}); '
                        'usage: python -m vidjax.stream --config=CONFIG.py '
                        '--checkpoint=DIR VIDEO')
  try:
    # config_flags defers a config file's load error until first access.
    config = holders['config'].value
    config.keys()
  except (VidjaxError, OSError) as e:
    if verbose:
      raise
    cli.exit_with_error(_message(e))
  try:
    run(config, holders['checkpoint'].value, rest[1],
        top_k=holders['top_k'].value, every=holders['every'].value,
        window=holders['window'].value,
        frame_stride=holders['frame_stride'].value)
  except VidjaxError as e:
    if verbose:
      raise
    cli.exit_with_error(str(e))
  return 0


if __name__ == '__main__':
  logging.set_verbosity(logging.WARNING)
  sys.exit(main(sys.argv))
