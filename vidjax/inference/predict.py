"""`python -m vidjax.predict`: a trained model's top-k classes for video files.

  python -m vidjax.predict --checkpoint=workdirs/k400_s3dg video.mp4
  python -m vidjax.predict --checkpoint=DIR --top_k=3 --json=out.json \\
      --csv=out.csv videos/            (a folder: every video in it, recursively)
  python -m vidjax.predict --checkpoint=DIR --window_s=4 --stride_s=2 long.mp4

Each video is decoded with PyAV as `python -m vidjax.data.prepare` decodes
it (the checkpoint's contract: fps, short side, JPEG quality), and its
views are made by the checkpoint's own evaluation steps
(`vidjax.inference.video_input`), so a raw file gets the logits evaluation
gives its prepared record (tests/inference/test_predict.py proves it). The
score of a class is the softmax averaged over the views, as evaluation's
video-level score. `--window_s` (and `--stride_s`, default the window)
make a timeline instead: the same multi-view test on each window.

Views of consecutive windows and videos are run in batches of
`--batch_size` (over all devices: a one-axis mesh), while a second thread
decodes ahead. Over several videos a progress line (stderr) shows the rate
and the ETA. A video that cannot be read (missing, empty, no frames,
corrupt, truncated) is listed with its reason and the others go on; the
exit status is 1 only when no video could be predicted. `--json` / `--csv`
are written whole (through a temporary file) once all videos are done.
"""
from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import os
import queue
import sys
import threading

from absl import flags

from vidjax import cli
from vidjax.data.builders import progress as progress_lib
from vidjax.data.builders.raw_video import VIDEO_EXTENSIONS
from vidjax.errors import VidjaxError
from vidjax.inference import batching
from vidjax.inference import predict_results as results_lib
from vidjax.inference import source_flags
from vidjax.inference import video_input
from vidjax.tools import files

USAGE = ('usage: python -m vidjax.predict --checkpoint=DIR [--top_k=5] '
         '[--window_s=S [--stride_s=S]] [--json=FILE] [--csv=FILE] '
         'VIDEO_OR_FOLDER...')
_PREFETCH = 8  # Windows decoded ahead of the model.


@dataclasses.dataclass(frozen=True)
class Options:
  top_k: int = 5
  window_s: float | None = None
  stride_s: float | None = None
  batch_size: int = 8
  jpeg_roundtrip: bool = True
  threads: int | None = None  # Decoder threads; None: FFmpeg's choice.


def warn(message: str):
  print(f'vidjax: warning: {" ".join(message.split())}', file=sys.stderr,
        flush=True)


# ---------------------------------------------------------------- Inputs.


def find_videos(paths: Sequence[str]) -> tuple[list[str], list[str]]:
  """(video files, folders with none): files as given, folders walked
  recursively (sorted; hidden entries skipped) for VIDEO_EXTENSIONS.

  A path that does not exist stays in the list: reading it fails with its
  reason like any other bad video.
  """
  videos, empty = [], []
  for path in paths:
    if not os.path.isdir(path):
      videos.append(path)
      continue
    found = []
    for root, dirs, names in os.walk(path):
      dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
      found.extend(os.path.join(root, n) for n in sorted(names)
                   if not n.startswith('.')
                   and os.path.splitext(n)[1].lower() in VIDEO_EXTENSIONS)
    videos.extend(found)
    if not found:
      empty.append(path)
  return videos, empty


def _reason(error: BaseException) -> str:
  reason = getattr(error, 'reason', None)
  if reason:
    return reason
  text = ' '.join(str(error).split())
  if isinstance(error, VidjaxError):
    return text
  return f'{type(error).__name__}: {text}'


class _Decoder(threading.Thread):
  """Reads the videos in order, putting their windows on a bounded queue:
  ('window', i, Window), ('done', i, (duration_s, num_frames)),
  ('failed', i, reason), and finally None."""

  def __init__(self, videos, contract, options: Options):
    super().__init__(daemon=True)
    self.items = queue.Queue(maxsize=_PREFETCH)
    self._videos, self._contract, self._options = videos, contract, options
    self._halt = threading.Event()

  def stop(self):
    self._halt.set()
    while self.is_alive():  # Unblock a put on the full queue.
      try:
        self.items.get(timeout=0.1)
      except queue.Empty:
        pass

  def _put(self, item):
    while not self._halt.is_set():
      try:
        self.items.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def run(self):
    o = self._options
    for i, path in enumerate(self._videos):
      try:
        with video_input.VideoReader(path, self._contract,
                                     jpeg_roundtrip=o.jpeg_roundtrip,
                                     threads=o.threads) as reader:
          for window in video_input.windows(reader, self._contract,
                                            window_s=o.window_s,
                                            stride_s=o.stride_s):
            if not self._put(('window', i, window)):
              return
          done = ('done', i, (reader.duration_s, reader.num_frames))
      except Exception as e:  # pylint: disable=broad-except
        # One odd file must not end a run over a folder: it is listed.
        done = ('failed', i, _reason(e))
      if not self._put(done):
        return
    self._put(None)


# --------------------------------------------------------------- Running.


def predict_videos(loaded, videos: Sequence[str], options: Options, *,
                   on_video=None, runner=None
                   ) -> tuple[list[results_lib.VideoResult],
                              list[results_lib.Failure]]:
  """Predicts every video; `on_video(result_or_failure)` as each finishes.

  Args:
    loaded: a `loader.Loaded`.
    videos: file paths.
    options: `Options`.
    on_video: called with a VideoResult or Failure, in input order.
    runner: a `batching.ViewRunner` to reuse (else one is built).

  Returns:
    (results, failures), each in input order.
  """
  video_input.check_window(options.window_s, options.stride_s)
  runner = runner or batching.ViewRunner(loaded.model, loaded.variables,
                                         options.batch_size)
  videos = list(videos)
  views = batching.ViewQueue(runner)
  collector = _Collector(videos, on_video)
  decoder = _Decoder(videos, loaded.contract, options)
  decoder.start()
  try:
    while (item := decoder.items.get()) is not None:
      kind, i, payload = item
      if kind == 'window':
        collector.started(i, payload)
        collector.returned(views.add((i, payload.index), payload.views))
      elif kind == 'done':
        collector.read(i, *payload)
      else:
        collector.failed(i, payload)
    collector.returned(views.flush())
  finally:
    decoder.stop()
  return collector.results, collector.failures


class _Collector:
  """Windows' outputs -> each video's result, handed on in input order."""

  def __init__(self, videos, on_video):
    self._videos, self._on_video = videos, on_video
    self._times = {}  # (i, window) -> (start_s, end_s), until it returns.
    self._windows = {}  # i -> [WindowResult]
    self._done = {}  # i -> (duration_s, num_frames) | Failure
    self._next = 0
    self.results, self.failures = [], []

  def started(self, i, window):
    self._times[i, window.index] = (window.start_s, window.end_s)

  def returned(self, done):
    for (i, w), logits, log_probs in done:
      start, end = self._times.pop((i, w))
      if not isinstance(self._done.get(i), results_lib.Failure):
        self._windows.setdefault(i, []).append(results_lib.window_result(
            w, start, end, logits, log_probs))
    self._emit()

  def read(self, i, duration_s, num_frames):
    self._done[i] = (duration_s, num_frames)
    self._emit()

  def failed(self, i, reason):
    # Windows of a video that failed midway (truncated) are dropped.
    self._done[i] = results_lib.Failure(self._videos[i], reason)
    self._windows.pop(i, None)
    self._emit()

  def _emit(self):
    while self._next in self._done:
      i = self._next
      if any(key[0] == i for key in self._times):
        return  # Views still in flight.
      done = self._done.pop(i)
      if isinstance(done, results_lib.Failure):
        out = done
        self.failures.append(out)
      else:
        got = sorted(self._windows.pop(i), key=lambda w: w.index)
        out = results_lib.VideoResult(self._videos[i], float(done[0]),
                                      int(done[1]), got)
        self.results.append(out)
      if self._on_video:
        self._on_video(out)
      self._next += 1


# ----------------------------------------------------------- Command line.


def _define_flags(argv) -> tuple[flags.FlagValues, dict]:
  """Flags of one invocation, on their own FlagValues: `main` re-enters."""
  fv = flags.FlagValues()
  holders = source_flags.define(fv, argv)
  holders.update(
      top_k=flags.DEFINE_integer('top_k', 5, 'Classes shown per video (or '
                                 'window).', lower_bound=1, flag_values=fv),
      window_s=flags.DEFINE_float(
          'window_s', None, 'A timeline: windows of this many seconds, each '
          'with its own multi-view scores (default: the whole video).',
          flag_values=fv),
      stride_s=flags.DEFINE_float(
          'stride_s', None, 'Seconds between window starts (default: '
          '--window_s, windows that touch).', flag_values=fv),
      batch_size=flags.DEFINE_integer(
          'batch_size', 8, 'Views per model call (rounded up to a multiple '
          'of the devices), packed across windows and videos.',
          lower_bound=1, flag_values=fv),
      json=flags.DEFINE_string('json', None, 'Write the results as JSON '
                               'here.', flag_values=fv),
      csv=flags.DEFINE_string('csv', None, 'Write the results as CSV here '
                              '(one row per video, window and rank).',
                              flag_values=fv),
      jpeg_roundtrip=flags.DEFINE_boolean(
          'jpeg_roundtrip', True, 'JPEG-encode each decoded frame at the '
          "contract's quality, as the training records store frames (exactly "
          "evaluation's input; --nojpeg_roundtrip is a little faster and "
          'differs by the JPEG error).', flag_values=fv),
  )
  return fv, holders


def _outputs(holders) -> dict[str, str]:
  """{'json': path, 'csv': path} of the outputs asked for, checked now: a
  run of an hour must not find at its end that it cannot write them."""
  return {name: files.check_writable(holders[name].value, name)
          for name in ('json', 'csv') if holders[name].value}


def run(loaded, paths: Sequence[str], options: Options,
        outputs: dict[str, str] | None = None, *, out=None) -> int:
  """Predicts `paths` (files and folders), prints, writes; returns 0.

  Raises VidjaxError when no video could be predicted.
  """
  out = out or sys.stdout
  contract = loaded.contract
  videos, empty = find_videos(paths)
  for folder in empty:
    warn(f'{folder}: no video files ({", ".join(VIDEO_EXTENSIONS)}) in it')
  if not videos:
    raise VidjaxError(f'no video files in {", ".join(paths)}')
  timeline = options.window_s is not None
  progress = (progress_lib.ConversionProgress('predict', len(videos), 0)
              if len(videos) > 1 else None)
  done = 0

  def on_video(result):
    nonlocal done
    done += 1
    if isinstance(result, results_lib.Failure):
      warn(f'skipped {result.path}: {result.reason}')
    else:
      print(results_lib.format_video(result, contract, options.top_k,
                                     timeline), file=out, flush=True)
    if progress:
      progress.update(done, final=done == len(videos))

  results, failures = predict_videos(loaded, videos, options,
                                     on_video=on_video)
  header = {'checkpoint': loaded.source.describe(),
            'fingerprint': loaded.fingerprint, 'fps': contract.fps,
            'short_side': contract.short_side,
            'window_s': options.window_s,
            'stride_s': (options.stride_s or options.window_s),
            'jpeg_roundtrip': options.jpeg_roundtrip}
  text = {'json': lambda: results_lib.to_json(
              results, failures, contract=contract, top_k=options.top_k,
              header=header),
          'csv': lambda: results_lib.to_csv(
              results, failures, contract=contract, top_k=options.top_k)}
  for name, path in (outputs or {}).items():
    files.write_text(path, text[name]())
  if failures:
    warn(f'{len(failures)} of {len(videos)} videos could not be read: '
         + '; '.join(f'{f.path}: {f.reason}' for f in failures))
  if not results:
    if len(failures) == 1:
      raise VidjaxError(f'{failures[0].path}: {failures[0].reason}')
    raise VidjaxError(f'none of the {len(videos)} videos could be '
                      'predicted (reasons above)')
  return 0


def main(argv: Sequence[str]) -> int:
  """`python -m vidjax.predict ...` with argv[0] the program; returns 0.

  Errors print one `vidjax: error:` line and raise SystemExit(1).
  """
  argv = list(argv)
  fv, holders = _define_flags(argv)

  def predict_command(rest):
    if len(rest) < 2:
      raise VidjaxError(f'give one or more videos or folders; {USAGE}')
    options = Options(
        top_k=holders['top_k'].value, window_s=holders['window_s'].value,
        stride_s=holders['stride_s'].value,
        batch_size=holders['batch_size'].value,
        jpeg_roundtrip=holders['jpeg_roundtrip'].value)
    video_input.check_window(options.window_s, options.stride_s)
    outputs = _outputs(holders)
    loaded = source_flags.load(holders)
    loaded.contract.require(
        video_input.NEEDS_JPEG if options.jpeg_roundtrip
        else video_input.NEEDS, loaded.source.describe())
    return run(loaded, rest[1:], options, outputs)

  # Its own FlagValues per call: main re-enters (the tests call it).
  return cli.run(predict_command, argv, flag_values=fv)
