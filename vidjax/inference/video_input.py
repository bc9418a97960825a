"""Raw video -> the model's input, exactly as preparation and evaluation make it.

Every tool that meets a video file (predict, features, explain, stream)
reads it here, so there is one way from a file to a model's views and it is
the training data's way:

  1. `VideoReader` decodes with `video_io.iter_video` at the contract's fps
     and short side: the frames `python -m vidjax.data.prepare` stores
     (`video_io.decode_video` is built on the same generator), one at a
     time. With `jpeg_roundtrip` (the default) each frame is JPEG-encoded at
     the contract's quality by the function preparation uses
     (`video_worker.encode_jpeg`), as the prepared records hold it.
  2. `clip_views` runs the contract's own evaluation steps
     (`contract.data_config()`, `pipeline_steps.resolve(..., train=False)`)
     on one window's frames, with the encoded frames standing where a
     record's JPEGs stand (so its 'decode' step decodes them as evaluation
     does) or, without the round trip, decoded frames handed past 'decode'.
     Nothing of sampling, resizing, cropping or normalising is re-written
     here: the views are evaluation's, in its order (clip * num_test_crops +
     crop).
  3. `windows` cuts a video into timed windows (one, the whole video, by
     default: the multi-view test as evaluation runs it) and makes each
     window's views.

`frame_view` is the one-frame centre view online streaming feeds.

The round trip is what makes predict's logits equal evaluation's within
float32 rounding (tests/inference/test_predict.py proves it); without it
the frames differ from the records' by the JPEG error (a tolerance the
same test measures).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import math
import os
from typing import Any

import numpy as np

from vidjax.data import video_io
from vidjax.data import video_worker
from vidjax.errors import VidjaxError
from vidjax.inference import contract as contract_lib

# Frame times are computed from rational timestamps: this much slack keeps a
# frame exactly on a window edge on the intended side.
_EPS = 1e-6

# Contract fields a reader needs (`Contract.require` names the flag).
NEEDS = ('fps', 'short_side')
NEEDS_JPEG = NEEDS + ('jpeg_quality',)


def decoding(contract: contract_lib.Contract, where: str = 'the checkpoint'
             ) -> tuple[float | None, int | None]:
  """(fps, short_side) for `video_io`: None where the contract says 'source'.

  Raises one VidjaxError naming the flag when the contract does not know.
  """
  contract.require(NEEDS, where)
  fps = None if contract.fps == contract_lib.SOURCE else float(contract.fps)
  short = (None if contract.short_side == contract_lib.SOURCE
           else int(contract.short_side))
  return fps, short


class VideoReader:
  """One video file, decoded as preparation decodes it, frame by frame.

  Opening decodes the first frame, so a missing, empty, 0-frame or
  unreadable file raises `video_io.VideoNotFoundError` /
  `VideoDecodeError` (VidjaxErrors: one line naming the file and the
  reason) here; a file truncated midway raises while iterating, at its end.

  Attributes:
    path: the file.
    fps: frames per second of `frames()` (the contract's, or the source's
      when the contract keeps it).
    source_fps: the file's frame rate.
    width, height: frame size after preparation's resize.
    num_frames: frames `frames()` will yield: an estimate from the header
      until iteration ends, then exact; None when the header has no length.
    duration_s: the video's length: from the header until iteration ends,
      then decoded; None when unknown.
  """

  def __init__(self, path: str | os.PathLike, contract: contract_lib.Contract,
               *, jpeg_roundtrip: bool = True, threads: int | None = None):
    self.path = os.fspath(path)
    self.contract = contract
    self.jpeg_roundtrip = jpeg_roundtrip
    if jpeg_roundtrip:
      contract.require(NEEDS_JPEG, 'the checkpoint')
    fps, short = decoding(contract)
    self._stream = video_io.iter_video(self.path, fps=fps, short_side=short,
                                       threads=threads)
    self._iter = iter(self._stream)
    try:
      self._first = next(self._iter)
    except StopIteration:  # _decode raises first; kept for safety.
      self.close()
      raise video_io.VideoDecodeError(self.path,
                                      'no decodable video frames') from None
    except BaseException:
      self.close()
      raise
    self.source_fps = float(self._stream.source_fps)
    self.fps = float(fps) if fps is not None else self.source_fps
    self.height, self.width = self._first[1].shape[:2]
    self.duration_s = self._stream.header_duration_s
    self.num_frames = (math.ceil(self.duration_s * self.fps - _EPS)
                       if self.duration_s else None)
    self._used = False

  # ----------------------------------------------------------- Frames.

  def _raw(self) -> Iterator[tuple[float, np.ndarray]]:
    if self._used:
      raise VidjaxError(f'{self.path}: a VideoReader yields its frames once')
    self._used = True
    first, self._first = self._first, None
    yield first
    yield from self._iter
    info = self._stream.info
    self.duration_s = info.end_s - info.start_s
    self.num_frames = info.num_frames

  def encoded(self) -> Iterator[tuple[float, bytes | np.ndarray]]:
    """(time_s, JPEG bytes) with jpeg_roundtrip, else (time_s, frame)."""
    for t, frame in self._raw():
      if self.jpeg_roundtrip:
        yield t, video_worker.encode_jpeg(frame, self.contract.jpeg_quality)
      else:
        yield t, frame

  def frames(self) -> Iterator[tuple[float, np.ndarray]]:
    """(time_s, uint8 [H, W, 3]): the prepared record's frames, in order."""
    for t, item in self.encoded():
      yield t, decode_jpegs([item])[0] if self.jpeg_roundtrip else item

  def close(self):
    self._stream.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def decode_jpegs(jpegs: Sequence[bytes]) -> np.ndarray:
  """uint8 [N, H, W, 3]: JPEGs decoded by the evaluation pipeline's decoder."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vidjax.data import transforms  # pylint: disable=g-import-not-at-top
  return transforms.decode_frames(tf.constant(list(jpegs))).numpy()


# ------------------------------------------------------------------ Views.

# contract JSON -> its view makers (one tf.function per input kind).
_VIEW_FNS: dict[str, Any] = {}


def _view_fn(contract: contract_lib.Contract, encoded: bool):
  key = (contract.to_json(), encoded)
  if key not in _VIEW_FNS:
    _VIEW_FNS[key] = _make_view_fn(contract, encoded)
  return _VIEW_FNS[key]


def _make_view_fn(contract, encoded: bool):
  """A tf.function (frames, clip_index) -> that clip's [crops, T, S, S, 3]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vidjax.data import pipeline_steps  # pylint: disable=g-import-not-at-top
  from vidjax.data import processing  # pylint: disable=g-import-not-at-top
  data = contract.data_config()
  steps = pipeline_steps.resolve(data, train=False)
  names = [name for name, _ in steps]
  if 'decode' not in names:
    raise VidjaxError(f'evaluation steps {names} have no decode step; the '
                      'frames of a video file cannot be fed to them')
  # The first step parses a serialized record (`processing` runs it alone);
  # the frames stand where it leaves the record's JPEGs.
  steps = steps[1:]
  if not encoded:
    steps = [(n, _decoded if n == 'decode' else s) for n, s in steps]
  shape = processing.output_shape(data, train=False)
  spec = (tf.TensorSpec([None], tf.string) if encoded
          else tf.TensorSpec([None, None, None, 3], tf.uint8))

  @tf.function(input_signature=[spec, tf.TensorSpec([], tf.int64)])
  def views(frames, clip_index):
    ctx = pipeline_steps.StepContext(
        config=data, train=False, num_classes=contract.num_classes,
        key=tf.zeros([2], tf.int64), clip_index=clip_index)
    f = {'frames': frames, 'label': tf.constant(0, tf.int64),
         'filename': tf.constant('')}
    for _, step in steps:
      f = step(f, ctx)
    video = f['video']
    if video.shape.rank == 4:  # No 'spatial_crops' listed (as processing).
      video = video[None]
    return tf.cast(tf.ensure_shape(video, shape), tf.float32)

  return views


def _decoded(f, ctx):
  """'decode' for frames that are decoded already."""
  del ctx
  f = dict(f)
  if 'crop_window' in f:
    raise VidjaxError('a crop window step before decode cannot run on '
                      'decoded frames; use jpeg_roundtrip')
  return {**f, 'video': f.pop('frames')}


def clip_views(frames, contract: contract_lib.Contract,
               clip_index: int | None = None) -> np.ndarray:
  """One window's frames -> evaluation's views of them.

  Args:
    frames: uint8 [N, H, W, 3] decoded frames, or a sequence of N JPEG
      strings (`VideoReader.encoded` with jpeg_roundtrip), all one window.
    contract: the model's contract.
    clip_index: one temporal clip's crops only; None: every clip.

  Returns:
    float32 [num_views, T, crop, crop, 3] in evaluation's order (view
    clip * num_test_crops + crop), or [num_test_crops, ...] for one clip.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
    encoded = False
    if frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
      raise VidjaxError(f'frames must be uint8 [N, H, W, 3] with N >= 1, got '
                        f'{frames.shape}')
  else:
    frames = list(frames)
    if not frames or not all(isinstance(j, bytes) for j in frames):
      raise VidjaxError('frames must be uint8 [N, H, W, 3] or a non-empty '
                        'sequence of JPEG bytes')
    encoded = True
  fn = _view_fn(contract, encoded)
  frames = tf.constant(frames)
  clips = (range(contract.num_test_clips) if clip_index is None
           else [clip_index])
  for k in clips:
    if not 0 <= k < contract.num_test_clips:
      raise VidjaxError(f'clip_index {k} not in [0, '
                        f'{contract.num_test_clips})')
  return np.concatenate([fn(frames, tf.constant(k, tf.int64)).numpy()
                         for k in clips])


def frame_view(frame: np.ndarray, contract: contract_lib.Contract
               ) -> np.ndarray:
  """uint8 [H, W, 3] -> float32 [crop, crop, 3]: the centre view of a frame.

  The short side to `contract.eval_short_side`, the centre crop, the
  contract's normalisation (the transforms evaluation's steps call): what
  online streaming feeds the model frame by frame.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vidjax.data import transforms  # pylint: disable=g-import-not-at-top
  video = tf.constant(np.asarray(frame, np.uint8)[None])
  video = transforms.resize_short_side(video, contract.eval_short_side)
  size = contract.crop_size
  video = transforms.centre_crop(video, size, size)
  video = transforms.normalize(video, contract.mean, contract.std)
  return video[0].numpy().astype(np.float32)


# ---------------------------------------------------------------- Windows.


@dataclasses.dataclass(frozen=True)
class Window:
  """Views of one time window of a video.

  Attributes:
    index: position in the video's windows (0, 1, ...).
    start_s, end_s: the window, in seconds from the start of the video
      (end_s is clipped to the video's end).
    views: float32 [num_views, T, crop, crop, 3] (`clip_views`).
    num_frames: frames of the video in the window (sampled from by views).
  """
  index: int
  start_s: float
  end_s: float
  views: np.ndarray
  num_frames: int


def check_window(window_s: float | None, stride_s: float | None):
  if window_s is None:
    if stride_s is not None:
      raise VidjaxError('--stride_s needs --window_s')
    return
  if not (math.isfinite(window_s) and window_s > 0):
    raise VidjaxError(f'--window_s must be a positive number of seconds, got '
                      f'{window_s}')
  if stride_s is not None and not (math.isfinite(stride_s) and stride_s > 0):
    raise VidjaxError(f'--stride_s must be a positive number of seconds, got '
                      f'{stride_s}')


def windows(reader: VideoReader, contract: contract_lib.Contract, *,
            window_s: float | None = None, stride_s: float | None = None
            ) -> Iterator[Window]:
  """The video's windows, each with its views, in time order.

  window_s None: one window, the whole video, sampled as evaluation samples
  a prepared video. Else windows [i * stride_s, i * stride_s + window_s)
  (stride_s defaults to window_s) while they start inside the video; the
  last is cut at the video's end, and a window that would only repeat the
  end of the one before (which already reached the end) is not made. Only
  one window's frames are held at a time (encoded, with jpeg_roundtrip).
  """
  check_window(window_s, stride_s)
  stride_s = stride_s or window_s
  frames = []  # (time_s, frame or JPEG) not yet past every window.
  index = 0

  def make(i, end):
    start = i * stride_s if window_s else 0.0
    items = [x for t, x in frames if t >= start - _EPS]
    if not items:
      raise VidjaxError(f'{reader.path}: window [{start:g}, {end:g}) s holds '
                        f'no frame at {reader.fps:g} fps; use a longer '
                        '--window_s')
    views = clip_views(np.stack(items) if not reader.jpeg_roundtrip
                       else items, contract)
    return Window(i, start, end, views, len(items))

  last_t = None
  for t, item in reader.encoded():
    while window_s and t >= index * stride_s + window_s - _EPS:
      yield make(index, index * stride_s + window_s)
      index += 1
      frames = [(u, x) for u, x in frames if u >= index * stride_s - _EPS]
    if not window_s or t >= index * stride_s - _EPS:
      frames.append((t, item))
    last_t = t
  video_end = reader.duration_s if reader.duration_s else last_t + 1 / reader.fps
  if not window_s:
    yield make(0, video_end)
    return
  while index * stride_s < video_end - _EPS and (
      index == 0 or (index - 1) * stride_s + window_s < video_end - _EPS):
    yield make(index, min(index * stride_s + window_s, video_end))
    index += 1
    frames = [(u, x) for u, x in frames if u >= index * stride_s - _EPS]
