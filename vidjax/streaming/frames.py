"""Preprocessed frames of a video file, decoded one at a time (PyAV)."""
from collections.abc import Iterator, Sequence
import math
import os

import av
import numpy as np

from vidjax.data import video_io
from vidjax.errors import VidjaxError


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
