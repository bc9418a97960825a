"""Converts one video file into one serialized DMVR SequenceExample.

This is what the conversion processes of `builders.raw_video` run. It imports
neither TensorFlow nor TFDS: a worker process then starts in a tenth of a
second with ~40 MB instead of ~6 s and ~650 MB, which matters with one worker
per core. So the SequenceExample is serialized here by hand (protobuf wire
format: a handful of length-delimited fields; `tests/data/test_prepare.py`
checks it parses to exactly what `formats.make_sequence_example` builds), and
the parent process writes the TFRecord files.
"""

from __future__ import annotations

import dataclasses
import io
from typing import Any

from PIL import Image

from vidjax.data import video_io
from vidjax.data.keys import (END_TIMESTAMP_KEY, FILENAME_KEY, IMAGE_KEY,
                              LABEL_INDEX_KEY, LABEL_TEXT_KEY,
                              START_TIMESTAMP_KEY)

OK, MISSING, UNDECODABLE = 'ok', 'missing', 'undecodable'



@dataclasses.dataclass(frozen=True)
class VideoTask:
  """One video to convert.

  Attributes:
    key: unique within the split; orders the shards and names the manifest
      row.
    path: the video file, or None when it was not found.
    filename: stored as `video/filename`: the path relative to manual_dir, or
      the expected file name when missing.
    label: class id, or -1 (`formats.MISSING_LABEL`) when unlabelled.
    label_text: class name ('' when unlabelled).
    start_s, end_s: time window to cut from the file (None: whole file).
    time_offset_s: where the file's time 0 lies in the original video
      (Kinetics clips cut from YouTube videos); added to the stored
      `clip/start|end/timestamp`.
  """

  key: str
  path: str | None
  filename: str
  label: int
  label_text: str
  start_s: float | None = None
  end_s: float | None = None
  time_offset_s: float = 0.0


@dataclasses.dataclass(frozen=True)
class Settings:
  fps: float | None
  short_side: int | None
  jpeg_quality: int
  decode_threads: int | None


# -----------------------------------------------------------------------------
# Protobuf wire format of tf.train.SequenceExample.
# -----------------------------------------------------------------------------


def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1  # Negative int64s are 10-byte two's complement.
  out = bytearray()
  while True:
    byte = n & 0x7F
    n >>= 7
    if n:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _delimited(field: int, payload: bytes) -> bytes:
  return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(*values: bytes) -> bytes:
  # Feature.bytes_list (1) = BytesList{repeated bytes value = 1}.
  return _delimited(1, b''.join(_delimited(1, v) for v in values))


def _int64_feature(*values: int) -> bytes:
  # Feature.int64_list (3) = Int64List{repeated int64 value = 1 [packed]}.
  return _delimited(3, _delimited(1, b''.join(_varint(v) for v in values)))


def _map_entry(key: str, value: bytes) -> bytes:
  return _delimited(1, key.encode()) + _delimited(2, value)


def sequence_example_bytes(
    *, encoded_frames, label: int, label_text: str, filename: str,
    start_timestamp_us: int | None = None,
    end_timestamp_us: int | None = None,
) -> bytes:
  """The serialized SequenceExample `formats.make_sequence_example` builds."""
  context = [
      (LABEL_INDEX_KEY, _int64_feature(label)),
      (LABEL_TEXT_KEY, _bytes_feature(label_text.encode('utf-8'))),
      (FILENAME_KEY, _bytes_feature(filename.encode('utf-8'))),
  ]
  if start_timestamp_us is not None:
    context.append((START_TIMESTAMP_KEY, _int64_feature(start_timestamp_us)))
  if end_timestamp_us is not None:
    context.append((END_TIMESTAMP_KEY, _int64_feature(end_timestamp_us)))
  # Features{map<string, Feature> feature = 1}.
  features = b''.join(_delimited(1, _map_entry(k, v)) for k, v in context)
  # FeatureList{repeated Feature feature = 1}: one JPEG per frame.
  frame_list = b''.join(_delimited(1, _bytes_feature(j))
                        for j in encoded_frames)
  feature_lists = _delimited(1, _map_entry(IMAGE_KEY, frame_list))
  # SequenceExample{Features context = 1; FeatureLists feature_lists = 2}.
  return _delimited(1, features) + _delimited(2, feature_lists)


def encode_jpeg(frame, quality: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(frame).save(buf, format='JPEG', quality=quality)
  return buf.getvalue()


# -----------------------------------------------------------------------------
# One video.
# -----------------------------------------------------------------------------


def convert_video(
    item: tuple[VideoTask, Settings, str, int]
) -> tuple[bytes | None, dict[str, Any]]:
  """(serialized record or None, manifest row) for one video.

  Args:
    item: (task, settings, split, shard index); one tuple so that it can go
      through `Pool.imap`.
  """
  task, settings, split, shard = item
  row = {
      'split': split, 'key': task.key, 'video': task.filename,
      'label': task.label, 'label_text': task.label_text, 'status': OK,
      'reason': '', 'num_frames': 0, 'duration_s': '', 'source_fps': '',
      'shard': shard,
  }
  if task.path is None:
    row.update(status=MISSING, reason='file not found')
    return None, row
  try:
    frames, info = video_io.decode_video(
        task.path, fps=settings.fps, short_side=settings.short_side,
        start_s=task.start_s, end_s=task.end_s,
        threads=settings.decode_threads,
    )
    jpegs = [encode_jpeg(f, settings.jpeg_quality) for f in frames]
  except video_io.VideoNotFoundError as e:
    row.update(status=MISSING, reason=e.reason)
    return None, row
  except video_io.VideoError as e:
    row.update(status=UNDECODABLE, reason=e.reason)
    return None, row
  except Exception as e:  # pylint: disable=broad-except
    # One odd file must not end a day-long conversion; it is recorded.
    row.update(status=UNDECODABLE,
               reason=f'{type(e).__name__}: {" ".join(str(e).split())}')
    return None, row
  record = sequence_example_bytes(
      encoded_frames=jpegs,
      label=task.label,
      label_text=task.label_text,
      filename=task.filename,
      start_timestamp_us=round((task.time_offset_s + info.start_s) * 1e6),
      end_timestamp_us=round((task.time_offset_s + info.end_s) * 1e6),
  )
  row.update(num_frames=len(frames), duration_s=round(info.duration_s, 4),
             source_fps=round(info.source_fps, 4))
  return record, row


def init_worker():
  # Ctrl-C reaches the whole process group; the parent alone decides (and
  # terminates the pool), so workers ignore it instead of printing tracebacks.
  import signal  # pylint: disable=g-import-not-at-top
  signal.signal(signal.SIGINT, signal.SIG_IGN)

