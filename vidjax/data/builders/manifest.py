"""`manifest.csv`: every video of every split, converted or not, and why."""

from __future__ import annotations

import collections
import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

from vidjax.data import video_worker
from vidjax.data.builders import atomic_files

MANIFEST_NAME = 'manifest.csv'
MANIFEST_FIELDS = (
    'split', 'key', 'video', 'label', 'label_text', 'status', 'reason',
    'num_frames', 'duration_s', 'source_fps', 'shard',
)
OK, MISSING, UNDECODABLE = (video_worker.OK, video_worker.MISSING,
                            video_worker.UNDECODABLE)
STATUSES = (OK, MISSING, UNDECODABLE)


def write_manifest(path: str, rows: list[dict[str, Any]]):
  """Writes the rows sorted by split (train, validation, test) and key."""
  order = {s: i for i, s in enumerate(('train', 'validation', 'test'))}
  rows = sorted(rows, key=lambda r: (order.get(r['split'], 9), r['split'],
                                     r['key']))
  text = io.StringIO(newline='')
  writer = csv.DictWriter(text, fieldnames=MANIFEST_FIELDS)
  writer.writeheader()
  writer.writerows(rows)
  atomic_files.atomic_write_text(path, text.getvalue())


def read_manifest(path: str) -> list[dict[str, str]]:
  with open(path, newline='', encoding='utf-8') as f:
    return list(csv.DictReader(f))


def summarize(
    rows: Sequence[Mapping[str, Any]]
) -> dict[str, collections.Counter]:
  """{split: Counter(status)} of manifest rows."""
  out: dict[str, collections.Counter] = {}
  for r in rows:
    out.setdefault(r['split'], collections.Counter())[r['status']] += 1
  return out
