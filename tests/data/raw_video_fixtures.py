"""Tiny raw-video datasets in the real annotation formats, for the tests.

Every video shows its frame index as brightness: frame i is uniformly grey
level `level(i)` (plus a moving bright bar so the codec has motion to code),
so a decoded frame says which source frame it came from.
"""

import csv
import json
import os

import numpy as np

from vidjax.data import video_io

HEIGHT, WIDTH = 32, 48
STEP = 5  # Grey levels between consecutive frames: survives lossy codecs.
MAX_FRAMES = 48  # Distinct levels; longer videos wrap around.


def level(i: int) -> int:
  return 10 + STEP * (i % MAX_FRAMES)


def pattern(num_frames: int, height: int = HEIGHT, width: int = WIDTH):
  frames = np.zeros((num_frames, height, width, 3), np.uint8)
  for i in range(num_frames):
    frames[i] = level(i)
    x = (2 * i) % (width - 4)
    frames[i, :4, x:x + 4] = 250  # A small bar in the top rows only.
  return frames


def frame_indices(frames: np.ndarray) -> np.ndarray:
  """Source frame index of each decoded frame (from the lower rows' grey)."""
  h = frames.shape[1]
  grey = frames[:, h // 3:, :, :].astype(float).mean(axis=(1, 2, 3))
  return np.rint((grey - level(0)) / STEP).astype(int)


def write_video(path, num_frames, fps, height=HEIGHT, width=WIDTH):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  video_io.encode_video(path, pattern(num_frames, height, width), fps)
  return path


def count_decodes(monkeypatch):
  """The base names of the videos decoded from now on (in-process)."""
  calls = []
  real = video_io.decode_video

  def counting(path, **kwargs):
    calls.append(os.path.basename(path))
    return real(path, **kwargs)

  monkeypatch.setattr(video_io, 'decode_video', counting)
  return calls


def truncate(path, fraction=0.5):
  data = open(path, 'rb').read()
  with open(path, 'wb') as f:
    f.write(data[: int(len(data) * fraction)])


# Kinetics class names with spaces, parentheses, apostrophes and quotes.
KINETICS_CLASSES = (
    'passing American football (in game)',
    "massaging person's head",
    'tying knot (not on a tie)',
    'zumba',
    'abseiling',
    # Quotes need CSV quoting; a comma would be refused (annotation_files).
    'dancing "ballet" style',
)


def write_kinetics_csv(path, rows, labelled=True):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    w = csv.writer(f)
    w.writerow(['label', 'youtube_id', 'time_start', 'time_end', 'split']
               if labelled else
               ['youtube_id', 'time_start', 'time_end', 'split'])
    for r in rows:
      w.writerow(r if labelled else r[1:])


SSV2_TEMPLATES = (
    'Putting [something] on a surface',
    'Pushing [something] from left to right',
    'Twisting (wringing) [something] wet until water comes out',
    'Pretending to put [something] into [something]',
)


def ssv2_labels(templates=SSV2_TEMPLATES):
  names = sorted(t.replace('[', '').replace(']', '') for t in templates)
  return {n: str(i) for i, n in enumerate(names)}


def write_json(path, obj):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(obj, f)


def read_records(paths):
  """Records parsed with the plain protobuf API and Pillow, not our parser."""
  # pylint: disable=g-import-not-at-top
  import io
  from PIL import Image
  import tensorflow as tf

  out = []
  for path in paths:
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
      seq = tf.train.SequenceExample.FromString(raw)
      ctx = seq.context.feature
      frames = np.stack([
          np.asarray(Image.open(io.BytesIO(f.bytes_list.value[0])))
          for f in seq.feature_lists.feature_list['image/encoded'].feature
      ])
      out.append(dict(
          label=ctx['clip/label/index'].int64_list.value[0],
          text=ctx['clip/label/text'].bytes_list.value[0].decode(),
          filename=ctx['video/filename'].bytes_list.value[0].decode(),
          start_us=ctx['clip/start/timestamp'].int64_list.value[0],
          end_us=ctx['clip/end/timestamp'].int64_list.value[0],
          frames=frames,
      ))
  return out
