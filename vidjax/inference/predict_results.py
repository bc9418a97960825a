"""What predict found: per video, per window, the top-k classes; as text,
JSON and CSV.

Scores are evaluation's video-level scores (`vidjax.train.evaluate`): the
softmax of each view, averaged over the window's views (float64).

JSON (`to_json`):
  {"checkpoint": ..., "fingerprint": ..., "window_s": null | s,
   "stride_s": ..., "views": {"clips": 10, "crops": 3}, "fps": 25.0,
   "jpeg_roundtrip": true,
   "videos": [{"path": ..., "duration_s": ..., "num_frames": ...,
               "top_k": [{"rank": 1, "class_index": 3, "label": ...,
                          "score": 0.87}, ...],   (whole-video runs only)
               "windows": [{"index": 0, "start_s": 0.0, "end_s": 4.0,
                            "top_k": [...]}, ...]}],
   "failed": [{"path": ..., "reason": ...}]}
CSV (`to_csv`): one row per (video, window, rank): video, window, start_s,
end_s, rank, class_index, label, score, error; a video that failed is one
row with its reason under error.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
from typing import Any

import numpy as np

from vidjax.inference import contract as contract_lib

CSV_COLUMNS = ('video', 'window', 'start_s', 'end_s', 'rank', 'class_index',
               'label', 'score', 'error')


@dataclasses.dataclass
class WindowResult:
  index: int
  start_s: float
  end_s: float
  logits: np.ndarray  # float32 [views, classes]
  scores: np.ndarray  # float64 [classes]: mean softmax over the views.

  def top(self, k: int) -> list[tuple[int, float]]:
    """[(class, score)], best first (ties: lower class first)."""
    order = np.argsort(-self.scores, kind='stable')[:k]
    return [(int(i), float(self.scores[i])) for i in order]


@dataclasses.dataclass
class VideoResult:
  path: str
  duration_s: float
  num_frames: int
  windows: list[WindowResult]


@dataclasses.dataclass
class Failure:
  path: str
  reason: str


def window_result(index, start_s, end_s, logits, log_probs) -> WindowResult:
  scores = np.exp(np.asarray(log_probs, np.float64)).mean(axis=0)
  return WindowResult(index, float(start_s), float(end_s), logits, scores)


def _ranked(top, contract) -> list[dict[str, Any]]:
  return [{'rank': r, 'class_index': c, 'label': contract.label(c),
           'score': s} for r, (c, s) in enumerate(top, 1)]


# -------------------------------------------------------------------- Text.


def format_video(video: VideoResult, contract: contract_lib.Contract,
                 top_k: int, timeline: bool) -> str:
  head = (f'{video.path}  ({video.duration_s:.2f} s, '
          f'{contract.num_test_clips}x{contract.num_test_crops} views')
  if not timeline:
    lines = [head + ')']
    for rank, (c, s) in enumerate(video.windows[0].top(top_k), 1):
      lines.append(f'  {rank}. {s:.4f}  {contract.label(c)}')
    return '\n'.join(lines)
  lines = [head + f' per window, {len(video.windows)} windows)']
  for w in video.windows:
    best = ', '.join(f'{contract.label(c)} {s:.4f}' for c, s in w.top(top_k))
    lines.append(f'  [{w.start_s:8.2f} s, {w.end_s:8.2f} s)  {best}')
  return '\n'.join(lines)


# -------------------------------------------------------------- JSON, CSV.


def to_json(videos: list[VideoResult], failures: list[Failure], *,
            contract: contract_lib.Contract, top_k: int, header: dict) -> str:
  timeline = header.get('window_s') is not None
  out = dict(header)
  out['views'] = {'clips': contract.num_test_clips,
                  'crops': contract.num_test_crops}
  out['videos'] = []
  for v in videos:
    entry = {'path': v.path, 'duration_s': v.duration_s,
             'num_frames': v.num_frames}
    if not timeline:
      entry['top_k'] = _ranked(v.windows[0].top(top_k), contract)
    entry['windows'] = [
        {'index': w.index, 'start_s': w.start_s, 'end_s': w.end_s,
         'top_k': _ranked(w.top(top_k), contract)} for w in v.windows]
    out['videos'].append(entry)
  out['failed'] = [{'path': f.path, 'reason': f.reason} for f in failures]
  return json.dumps(out, indent=2) + '\n'


def to_csv(videos: list[VideoResult], failures: list[Failure], *,
           contract: contract_lib.Contract, top_k: int) -> str:
  buf = io.StringIO()
  writer = csv.writer(buf, lineterminator='\n')
  writer.writerow(CSV_COLUMNS)
  for v in videos:
    for w in v.windows:
      for rank, (c, s) in enumerate(w.top(top_k), 1):
        writer.writerow([v.path, w.index, f'{w.start_s:.6g}',
                         f'{w.end_s:.6g}', rank, c, contract.label(c),
                         f'{s:.6g}', ''])
  for f in failures:
    writer.writerow([f.path, '', '', '', '', '', '', '', f.reason])
  return buf.getvalue()
