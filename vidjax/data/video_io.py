"""Reading and writing video files with PyAV (FFmpeg).

`decode_video` turns a file into uint8 frames [T, H, W, 3] (THWC, RGB) at a
chosen frame rate and size, optionally only a time window of it. It is what
the dataset builders (Kinetics, Something-Something-v2) use to convert raw
videos into DMVR TFRecords.

Frame-rate resampling is nearest-in-time selection, not blending: output frame
k is meant to show time `start + k / fps`, and it is the decoded frame whose
presentation timestamp is closest to that time (ties go to the earlier frame).
So no frame is ever synthesised: upsampling repeats frames, downsampling drops
them, and at the source rate every frame is returned once. A clip of length D
seconds at `fps` has `ceil(D * fps)` frames. Timestamps are taken from the
stream (relative to its start time), so variable-frame-rate files are handled
by time, not by frame index.

Errors a dataset preparation must survive (missing file, corrupt or truncated
container, no video stream, zero frames, a window past the end) raise
`VideoError` subclasses whose `reason` is a short human-readable phrase; the
builders record it in their manifest and move on.

`encode_video` writes frames as H.264 in MP4 or VP9 in WebM; tests and the
loader benchmark use it to make small videos.
"""

from __future__ import annotations

import dataclasses
import fractions
import os
from collections.abc import Sequence

import av
import numpy as np

from vidjax.errors import VidjaxError

# Float timestamps of frames computed from rational pts: this much slack keeps
# a frame exactly at a window edge on the intended side.
_EPS = 1e-6

# Codec per container for `encode_video`'s default.
_DEFAULT_CODECS = {'.mp4': 'libx264', '.webm': 'libvpx-vp9', '.mkv': 'libx264'}


class VideoError(VidjaxError):
  """A video that cannot be turned into frames; `reason` says why."""

  def __init__(self, path: str | os.PathLike, reason: str):
    self.path = os.fspath(path)
    self.reason = reason
    super().__init__(f'{self.path}: {reason}')


class VideoNotFoundError(VideoError):
  """The file does not exist."""


class VideoDecodeError(VideoError):
  """The file exists but yields no usable frames (corrupt, truncated, empty,
  no video stream, or the requested window lies outside the video)."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What `decode_video` learned about the source and returned.

  Attributes:
    source_fps: the stream's average frame rate.
    source_duration_s: length of the whole video in seconds: from the decoded
      frames when the whole file was read, else from the container header
      (None if the header has none).
    source_width, source_height: frame size in the file.
    codec: decoder name, e.g. 'h264', 'vp9'.
    start_s, end_s: the window actually returned, in seconds from the start
      of the video (the requested window clipped to the video).
    num_source_frames: decoded frames whose timestamps lie in the window.
    num_frames: frames returned.
  """

  source_fps: float
  source_duration_s: float | None
  source_width: int
  source_height: int
  codec: str
  start_s: float
  end_s: float
  num_source_frames: int
  num_frames: int

  @property
  def duration_s(self) -> float:
    """Length of the returned clip in seconds."""
    return self.end_s - self.start_s


def resized_shape(height: int, width: int, short_side: int | None):
  """(height, width) after scaling so that the shorter side is `short_side`.

  Aspect ratio is kept, the long side rounded to the nearest pixel. None
  keeps the size.
  """
  if short_side is None:
    return height, width
  if short_side <= 0:
    raise VidjaxError(f'short_side must be positive, got {short_side}')
  scale = short_side / min(height, width)
  if height <= width:
    return short_side, max(1, round(width * scale))
  return max(1, round(height * scale)), short_side


def _frame_rate(stream) -> float | None:
  for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
    if rate:
      return float(rate)
  return None


def decode_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    short_side: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    threads: int | None = None,
) -> tuple[np.ndarray, VideoInfo]:
  """Decodes a video (or a time window of it) into RGB frames.

  Args:
    path: a video file FFmpeg can read (mp4, webm, mkv, avi, ...).
    fps: output frame rate; frames are picked nearest-in-time (see the module
      docstring). None returns every source frame in the window.
    short_side: resize so that min(height, width) is this (area filter when
      shrinking); None keeps the source size.
    start_s: window start in seconds from the start of the video (default 0).
      Decoding seeks to the key frame before it, so cutting a short clip from
      a long video does not decode the whole file.
    end_s: window end in seconds (exclusive; default: end of the video). A
      window reaching past the end is clipped to the video.
    threads: decoder threads; None lets FFmpeg choose (all cores). Use 1 when
      running one decoder per core in several processes.

  Returns:
    (frames, info): uint8 [T, H, W, 3] with T >= 1, and a `VideoInfo`.

  Raises:
    VideoNotFoundError: `path` does not exist.
    VideoDecodeError: corrupt or truncated file, no video stream, no frames,
      or a window that starts at or after the end of the video.
    VidjaxError: invalid arguments (non-positive fps or short_side, end
      before start).
  """
  picked = []
  stream = iter_video(path, fps=fps, short_side=short_side, start_s=start_s,
                      end_s=end_s, threads=threads)
  try:
    for _, frame in stream:
      picked.append(frame)
  finally:
    stream.close()
  return np.stack(picked), stream.info


class VideoFrames:
  """`decode_video`'s frames one at a time: iterate for (time_s, frame).

  `time_s` is the output frame's time from the start of the video (`start_s +
  k / fps`, or the source frame's timestamp when fps is None); frame is uint8
  [H, W, 3]. Iterating yields exactly the frames `decode_video` stacks (it is
  built on this), holding only the newest decoded frame. Errors are raised
  where they are found: opening (`iter_video`), the first frame, or the end
  (a truncated file is known only there). `source_fps` and
  `header_duration_s` are known once iteration has started, `info` (a
  `VideoInfo`) once it has ended.
  """

  def __init__(self, container, path, args):
    self._container = container
    self.path = path
    self._args = args
    self.source_fps: float | None = None
    self.header_duration_s: float | None = None
    self.info: VideoInfo | None = None
    self._iter = None

  def __iter__(self):
    if self._iter is None:
      self._iter = self._generate()
    return self._iter

  def _generate(self):
    try:
      yield from _decode(self._container, self.path, *self._args, sink=self)
    finally:
      self.close()

  def close(self):
    if self._container is not None:
      self._container.close()
      self._container = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def iter_video(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    short_side: int | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    threads: int | None = None,
) -> VideoFrames:
  """Opens a video for `VideoFrames`: `decode_video`'s frames, streamed.

  Arguments and errors as `decode_video`'s; a file that is missing, empty or
  cannot be opened raises here, the rest while iterating.
  """
  path = os.fspath(path)
  if fps is not None and not fps > 0:
    raise VidjaxError(f'fps must be positive, got {fps}')
  start = float(start_s or 0.0)
  if start < 0:
    raise VidjaxError(f'start_s must be >= 0, got {start_s}')
  if end_s is not None and end_s <= start:
    raise VidjaxError(f'{path}: window end {end_s} s is not after start {start} s')
  if not os.path.exists(path):
    raise VideoNotFoundError(path, 'file not found')
  if os.path.isdir(path):
    raise VideoDecodeError(path, 'is a directory, not a video file')
  if os.path.getsize(path) == 0:
    raise VideoDecodeError(path, 'empty file (0 bytes)')
  try:
    container = av.open(path)
  except av.error.FFmpegError as e:
    raise VideoDecodeError(
        path, f'cannot open (corrupt or truncated?): {_ffmpeg_reason(e)}'
    ) from e
  return VideoFrames(container, path,
                     (fps, short_side, start, end_s, threads))


def _ffmpeg_reason(error: Exception) -> str:
  # PyAV messages end with the file name, which the caller prints anyway.
  text = getattr(error, 'strerror', None) or str(error)
  return ' '.join(str(text).split())


def _decode(container, path, fps, short_side, start, end_s, threads, sink):
  """Yields (time_s, frame); sets `sink`'s source facts and `info`."""
  if not container.streams.video:
    raise VideoDecodeError(path, 'no video stream')
  stream = container.streams.video[0]
  if threads is None:
    stream.thread_type = 'AUTO'
  else:
    stream.thread_count = threads
  source_fps = _frame_rate(stream)
  sink.source_fps = source_fps
  time_base = stream.time_base
  origin = (
      float(stream.start_time * time_base)
      if stream.start_time is not None
      else 0.0
  )
  header_duration = None
  if stream.duration is not None and time_base is not None:
    header_duration = float(stream.duration * time_base)
  elif container.duration is not None:
    header_duration = container.duration / av.time_base
  sink.header_duration_s = header_duration
  if header_duration is not None and header_duration > 0 and (
      start >= header_duration
  ):
    raise VideoDecodeError(
        path,
        f'clip window starts at {start:g} s but the video is only '
        f'{header_duration:.3f} s long',
    )

  if start > 0 and time_base is not None:
    try:
      container.seek(
          int((start + origin) / time_base), stream=stream, backward=True
      )
    except av.error.FFmpegError:
      # Unseekable streams: decode from the start; the frames before the
      # window are skipped below all the same.
      container.seek(0)

  height = stream.codec_context.height
  width = stream.codec_context.width
  out_hw = None  # Set from the first frame: the header size can be 0.
  num_picked = 0
  converted: dict[int, np.ndarray] = {}  # Frame serial -> RGB, for repeats.
  num_in_window = 0
  last_t = None
  prev = None  # (serial, time, frame) of the last decoded frame.
  serial = 0
  target = 0  # Index k of the next output frame (resampling mode).
  # Time one frame is shown: the gap after the last frame, for the duration.
  period = 1.0 / source_fps if source_fps else None
  stopped_early = False

  def to_rgb(ser, frame):
    if ser not in converted:
      h, w = out_hw
      interpolation = 'AREA' if h * w < frame.height * frame.width else 'BICUBIC'
      converted.clear()  # Only the newest frame can repeat.
      converted[ser] = frame.reformat(
          width=w, height=h, format='rgb24', interpolation=interpolation
      ).to_ndarray()
    return converted[ser]

  try:
    for frame in container.decode(stream):
      if frame.pts is not None and frame.time is not None:
        t = float(frame.time) - origin
      elif last_t is not None and period:
        t = last_t + period
      else:
        t = 0.0
      if last_t is not None and t <= last_t:
        # Out-of-order or duplicate timestamps (broken muxers): keep
        # presentation order monotonic so the selection below stays valid.
        t = last_t + (period or _EPS) * 1e-3
      if out_hw is None:
        height, width = frame.height, frame.width
        out_hw = resized_shape(height, width, short_side)
      in_window = t >= start - _EPS and (end_s is None or t < end_s - _EPS)
      num_in_window += in_window
      if fps is None:
        if in_window:
          num_picked += 1
          yield t, to_rgb(serial, frame)
      elif prev is not None:
        # Targets closer to the previous frame than to this one are its.
        mid = (prev[1] + t) / 2
        while True:
          tk = start + target / fps
          if tk > mid + _EPS or (end_s is not None and tk >= end_s - _EPS):
            break
          num_picked += 1
          yield tk, to_rgb(prev[0], prev[2])
          target += 1
      prev = (serial, t, frame)
      last_t = t
      serial += 1
      if end_s is not None and t >= end_s - _EPS:
        stopped_early = True
        break
  except av.error.FFmpegError as e:
    raise VideoDecodeError(
        path,
        f'decoding failed after {serial} frames (truncated or corrupt): '
        f'{_ffmpeg_reason(e)}',
    ) from e

  if prev is None:
    raise VideoDecodeError(path, 'no decodable video frames')
  if period is None:
    period = (last_t / (serial - 1)) if serial > 1 and last_t > 0 else 1 / 30
    source_fps = 1.0 / period
  video_end = last_t + period
  if time_base is not None:
    # Coarse time bases (WebM's is 1 ms) put frames up to half a tick off
    # the frame grid; snap so a 2 s clip lasts 2 s, not 1.9997 s.
    video_end = float(round(video_end / time_base) * time_base)
  if stopped_early:
    source_duration = header_duration
    end = float(end_s)
  else:
    # All frames seen: the decoded length beats the header, which truncated
    # files overstate.
    source_duration = video_end
    # Truncated files (an interrupted download or copy) often still open and
    # decode up to where the data stops; only the header knows the length.
    # Audio may legitimately outlast the video a little, hence the slack.
    if header_duration and video_end < 0.9 * header_duration - 0.5:
      raise VideoDecodeError(
          path,
          f'truncated: frames stop at {video_end:.3f} s but the container '
          f'says {header_duration:.3f} s',
      )
    end = video_end if end_s is None else min(float(end_s), video_end)
  if end <= start + _EPS:
    raise VideoDecodeError(
        path,
        f'clip window starts at {start:g} s but the video has frames only '
        f'until {video_end:.3f} s',
    )
  if fps is not None:
    # The last frame decoded is nearest to every target left in the window.
    while start + target / fps < end - _EPS:
      num_picked += 1
      yield start + target / fps, to_rgb(prev[0], prev[2])
      target += 1
  if not num_picked:
    raise VideoDecodeError(
        path, f'no frames in the window [{start:g}, {end:g}) s'
    )
  sink.source_fps = float(source_fps)
  sink.info = VideoInfo(
      source_fps=float(source_fps),
      source_duration_s=source_duration,
      source_width=width,
      source_height=height,
      codec=stream.codec_context.name,
      start_s=start,
      end_s=end,
      num_source_frames=int(num_in_window),
      num_frames=num_picked,
  )


def encode_video(
    path: str | os.PathLike,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float,
    codec: str | None = None,
    *,
    crf: int | None = None,
    options: dict[str, str] | None = None,
) -> None:
  """Writes uint8 RGB frames [T, H, W, 3] to a video file.

  Args:
    path: output file; the container follows the extension (.mp4, .webm,
      .mkv).
    frames: uint8 [T, H, W, 3]; H and W must be even (4:2:0 chroma).
    fps: frame rate (may be fractional, e.g. 29.97).
    codec: FFmpeg encoder, e.g. 'libx264' (default for .mp4/.mkv) or
      'libvpx-vp9' (default for .webm).
    crf: constant-rate-factor quality (lower is better; x264 0-51, VP9 0-63).
      None uses 18 for x264 and 30 for VP9 (visually lossless-ish, small).
    options: extra encoder options (FFmpeg -x option names).
  """
  path = os.fspath(path)
  frames = np.asarray(frames)
  if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
    raise VidjaxError(
        f'{path}: frames must be uint8 [T, H, W, 3], got {frames.dtype} '
        f'{frames.shape}'
    )
  if len(frames) == 0:
    raise VidjaxError(f'{path}: no frames to encode')
  _, height, width, _ = frames.shape
  if height % 2 or width % 2:
    raise VidjaxError(f'{path}: frame size {height}x{width} must be even')
  ext = os.path.splitext(path)[1].lower()
  codec = codec or _DEFAULT_CODECS.get(ext)
  if codec is None:
    raise VidjaxError(f'{path}: give a codec for extension {ext!r}')
  rate = fractions.Fraction(fps).limit_denominator(1001)
  opts = {}
  if codec in ('libx264', 'h264'):
    opts['crf'] = str(18 if crf is None else crf)
  elif codec in ('libvpx-vp9', 'vp9'):
    opts.update({'crf': str(30 if crf is None else crf), 'b:v': '0',
                 'deadline': 'realtime', 'cpu-used': '8'})
  opts.update(options or {})
  with av.open(path, mode='w') as container:
    stream = container.add_stream(codec, rate=rate, options=opts)
    stream.width, stream.height = width, height
    stream.pix_fmt = 'yuv420p'
    stream.codec_context.time_base = 1 / rate
    for i, rgb in enumerate(frames):
      frame = av.VideoFrame.from_ndarray(rgb, format='rgb24')
      frame.pts = i
      frame.time_base = stream.codec_context.time_base
      container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
