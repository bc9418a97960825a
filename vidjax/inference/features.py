"""Per-window features of a trained model over video files.

  python -m vidjax.features --checkpoint=WORKDIR --out=FEATURES \\
      [--layer=prelogits] [--pool=mean|none] [--views=mean|all] \\
      [--window_s=2 --stride_s=1] VIDEO_OR_FOLDER...
  python -m vidjax.features --checkpoint=WORKDIR --list_layers

Each video (a folder: every video file under it) becomes OUT/<name>.npz:
features [W, ...] float32, one row per window, with the window's start_s
and end_s in seconds, and OUT/manifest.json records everything that
determines them (vidjax/inference/feature_files.py). Videos are decoded
and cut into views by the checkpoint's preprocessing contract
(vidjax/inference/video_input.py: the fps, short side and JPEG quality of
preparation, then evaluation's own steps), so the features are those of
the clips the model was trained and evaluated on.

  --layer   `prelogits` (default: the classifier's input, the vector the
            logits are an affine map of), or any layer `--list_layers`
            names: Inception's Mixed_4b..., ResNet's layer1..layer4 and
            their blocks (layer3/block2), TimeSformer's blocks
            (blocks_7/cls, blocks_7/patches) (vidjax/inference/layers.py).
  --pool    mean (default): the layer's mean over time and space (or
            tokens), one vector per view; none: the activation as is.
  --views   mean (default): the mean over the window's test views (the
            contract's clips x crops, evaluation's protocol); all: every
            view, features [W, V, ...] in evaluation's view order.
  --window_s, --stride_s   windows of that many seconds, every stride_s
            (default: the window); without them, one window, the whole
            video, as evaluation samples it.

Resumable: a video whose file exists with this run's settings is skipped,
so a killed run is continued by running it again; files are written whole
or not at all. An output folder of other settings is one error naming what
differs (use another --out). A video that cannot be read is listed with
its reason and the others go on; the command fails only when no video
could be extracted.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
import contextlib
import dataclasses
import os
import sys
import time

from absl import flags
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from vidjax import cli
from vidjax.errors import VidjaxError
from vidjax.inference import batching
from vidjax.inference import feature_files
from vidjax.inference import layers as layers_lib
from vidjax.inference import predict
from vidjax.inference import source_flags
from vidjax.inference import video_input

VIEWS = ('mean', 'all')


@dataclasses.dataclass(frozen=True)
class Video:
  """A video file and the name of its features (OUT/<name>.npz)."""
  path: str
  name: str


def videos_in(paths: Sequence[str]) -> list[Video]:
  """The files named, and the video files under the folders named
  (predict's listing); a video's name is its path inside the folder, or
  its file name, without the extension."""
  found = []
  for given in paths:
    for path in predict.find_videos([given])[0]:
      inside = (os.path.relpath(path, given) if os.path.isdir(given)
                else os.path.basename(path))
      found.append(Video(path, os.path.splitext(inside)[0]))
  by_name = {}
  for video in found:
    other = by_name.setdefault(video.name, video)
    if other is not video:
      raise VidjaxError(f'{other.path} and {video.path} would both write '
                        f'{video.name}{feature_files.SUFFIX}; give them in '
                        'separate runs with separate --out')
  return found


# ------------------------------------------------------------ Computing.


class FeatureRunner:
  """Windows' views → their features, a fixed number of windows per call
  (the last batch padded with zeros), so the model compiles once. With
  several devices the windows of a batch are split over a one-axis mesh
  (as predict's, inference/batching.py), the weights replicated."""

  def __init__(self, loaded, layer: str, pool: str, views: str,
               batch_size: int, devices=None):
    contract = loaded.contract
    self.mesh = batching.make_mesh(devices)
    self.windows_per_batch = batching.batch_size_for(
        max(1, batch_size // contract.num_views), self.mesh)
    self._extract = layers_lib.make_extractor(
        loaded.model, contract.model_name, layer, pool,
        average_views=views == 'mean')
    self._variables = jax.device_put(
        loaded.variables, NamedSharding(self.mesh, P()))

  def __call__(self, views: Sequence[np.ndarray]) -> np.ndarray:
    n = len(views)
    batch = np.stack(list(views) + [np.zeros_like(views[0])] * (
        self.windows_per_batch - n))
    features = self._extract(self._variables,
                             batching.shard_batch(batch, self.mesh))
    return np.asarray(features)[:n]


def compute(windows: Iterable, runner: FeatureRunner):
  """(features [W, ...], start_s [W], end_s [W]) of a video's windows."""
  features, starts, ends, pending = [], [], [], []

  def run():
    features.append(runner([w.views for w in pending]))
    starts.extend(w.start_s for w in pending)
    ends.extend(w.end_s for w in pending)
    pending.clear()

  for window in windows:
    pending.append(window)
    if len(pending) == runner.windows_per_batch:
      run()
  if pending:
    run()
  if not features:
    raise VidjaxError('no window to extract')
  return np.concatenate(features), np.array(starts), np.array(ends)


@contextlib.contextmanager
def video_windows(path: str, contract, window_s, stride_s):
  """The windows of the video at `path` (video_input's)."""
  with video_input.VideoReader(path, contract) as reader:
    yield video_input.windows(reader, contract, window_s=window_s,
                              stride_s=stride_s)


# ------------------------------------------------------------- Progress.


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'
  return f'{seconds // 60:02d}:{seconds % 60:02d}'


class Progress:
  """One line per video on `out`: what happened, the rate and the ETA."""

  def __init__(self, total: int, out):
    self.total = total
    self.out = out
    self.start = time.monotonic()
    self.extracted = 0  # Videos computed in this run.
    self.windows = 0
    self.skipped = 0
    self.failed = 0

  def _say(self, index: int, video: Video, text: str):
    print(f'[{index + 1}/{self.total}] {video.path}: {text}', file=self.out,
          flush=True)

  def skip(self, index: int, video: Video):
    self.skipped += 1
    self._say(index, video, 'done before, skipped')

  def fail(self, index: int, video: Video, reason: str):
    self.failed += 1
    self._say(index, video, f'FAILED: {reason}')

  def done(self, index: int, video: Video, windows: int):
    self.extracted += 1
    self.windows += windows
    elapsed = max(time.monotonic() - self.start, 1e-9)
    left = (self.total - index - 1) * elapsed / self.extracted
    self._say(index, video, f'{windows} windows -> {video.name}'
              f'{feature_files.SUFFIX} | {self.windows / elapsed:.2f} '
              f'windows/s, {60 * self.extracted / elapsed:.1f} videos/min, '
              f'ETA {_duration(left)}')


def _reason(error: BaseException, path: str) -> str:
  """Why a video failed, without its path (the line names it)."""
  reason = getattr(error, 'reason', None)  # video_io.VideoError's.
  text = reason or ' '.join(str(error).split()) or type(error).__name__
  return text.removeprefix(f'{path}: ')


def extract_all(videos: Sequence[Video], output: feature_files.Output,
                compute_video: Callable[[str], tuple], out=None
                ) -> Progress:
  """Features of every video not done yet; returns the counts.

  `compute_video(path)` → (features, start_s, end_s); a VidjaxError or
  OSError from it (a file that cannot be read) fails that video only. A
  failure to write stops the run (a full disk fails every video alike).
  """
  progress = Progress(len(videos), out or sys.stderr)
  output.open()
  try:
    for index, video in enumerate(videos):
      if output.is_done(video.name):
        progress.skip(index, video)
        continue
      try:
        features, start_s, end_s = compute_video(video.path)
      except (VidjaxError, OSError) as e:
        reason = _reason(e, video.path)
        output.fail(video.path, reason)
        progress.fail(index, video, reason)
        continue
      output.write(video.name, video.path, features, start_s, end_s)
      progress.done(index, video, len(features))
  except BaseException:
    with contextlib.suppress(Exception):  # The first error is the one.
      output.write_manifest()
    raise
  output.write_manifest()
  return progress


# ---------------------------------------------------------- Command line.


def _define_flags(argv: Sequence[str]):
  fv = flags.FlagValues()
  holders = source_flags.define(fv, argv)
  holders.update(
      out=flags.DEFINE_string(
          'out', None, 'Folder of the feature files (OUT/<video>.npz) and '
          'their manifest.json; a run into it again skips what is done.',
          flag_values=fv),
      layer=flags.DEFINE_string(
          'layer', layers_lib.PRELOGITS, 'The layer whose activations are '
          'the features (--list_layers names them).', flag_values=fv),
      pool=flags.DEFINE_enum(
          'pool', 'mean', layers_lib.POOLS, "mean: the layer's mean over "
          'time and space (or tokens); none: the activation as is.',
          flag_values=fv),
      views=flags.DEFINE_enum(
          'views', 'mean', VIEWS, "mean: averaged over each window's test "
          'views (clips x crops); all: one row per view.', flag_values=fv),
      window_s=flags.DEFINE_float(
          'window_s', None, 'Seconds per window (default: one window, the '
          'whole video).', flag_values=fv),
      stride_s=flags.DEFINE_float(
          'stride_s', None, 'Seconds from one window to the next (default: '
          '--window_s).', flag_values=fv),
      batch_size=flags.DEFINE_integer(
          'batch_size', 16, 'Views per model call (whole windows; at least '
          'one).', lower_bound=1, flag_values=fv),
      list_layers=flags.DEFINE_bool(
          'list_layers', False, "Print the model's layers with the shape of "
          "one view's activation, and exit.", flag_values=fv),
  )
  return fv, holders


def _record(loaded, shape: tuple[int, ...]) -> dict:
  """What the manifest says beside the settings (changes no number)."""
  import av  # pylint: disable=g-import-not-at-top
  import flax  # pylint: disable=g-import-not-at-top
  return {'checkpoint': loaded.source.describe(),
          'checkpoint_path': loaded.source.path,
          'feature_shape': list(shape), 'dtype': 'float32',
          'versions': {'jax': jax.__version__, 'flax': flax.__version__,
                       'numpy': np.__version__, 'av': av.__version__}}


def run(holders, paths: Sequence[str], out=None) -> int:
  out = out or sys.stdout
  loaded = source_flags.load(holders)
  contract = loaded.contract
  layers = layers_lib.list_layers(loaded.model, contract)
  if holders['list_layers'].value:
    for name, shape in layers.items():
      print(f'{name}  {list(shape)}', file=out)
    return 0
  layer = layers_lib.check_layer(holders['layer'].value, layers,
                                 contract.model_name)
  if not holders['out'].value:
    raise VidjaxError('give the output folder with --out=DIR')
  if not paths:
    raise VidjaxError('give video files or folders to extract features of')
  window_s, stride_s = holders['window_s'].value, holders['stride_s'].value
  video_input.check_window(window_s, stride_s)
  contract.require(video_input.NEEDS_JPEG, loaded.source.describe())
  videos = videos_in(paths)
  if not videos:
    raise VidjaxError(f'no video files '
                      f'({", ".join(predict.VIDEO_EXTENSIONS)}) in '
                      f'{", ".join(paths)}')
  pool, views = holders['pool'].value, holders['views'].value
  shape = layers_lib.pooled_shape(layers[layer], pool)
  if views == 'all':
    shape = (contract.num_views, *shape)
  output = feature_files.Output(
      holders['out'].value,
      feature_files.settings(loaded, layer=layer, pool=pool, views=views,
                             window_s=window_s, stride_s=stride_s),
      _record(loaded, shape))
  runner = FeatureRunner(loaded, layer, pool, views,
                         holders['batch_size'].value)

  def compute_video(path):
    with video_windows(path, contract, window_s, stride_s) as windows:
      return compute(windows, runner)

  progress = extract_all(videos, output, compute_video)
  print(outcome(progress, output), file=out)
  return 0


def outcome(progress: Progress, output: feature_files.Output) -> str:
  """The run's last line; a VidjaxError when no video has features."""
  if progress.failed and not (progress.extracted or progress.skipped):
    first, reason = next(iter(output.failed.items()))
    raise VidjaxError(f'no features extracted: {progress.failed} videos '
                      f'failed (first: {first}: {reason})')
  return (f'{progress.extracted} videos extracted, {progress.skipped} done '
          f'before, {progress.failed} failed -> {output.directory}')


def main(argv: Sequence[str]) -> int:
  # Its own FlagValues per call: main re-enters (the tests call it).
  fv, holders = _define_flags(argv)
  return cli.run(lambda args: run(holders, args[1:]), argv, flag_values=fv)
