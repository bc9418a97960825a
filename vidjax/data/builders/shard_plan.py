"""Which video goes into which shard, fixed by the annotations alone.

Each split's tasks are ordered by a hash of their key (so class-sorted
annotation files end up mixed across and within shards) and cut into even
shards. The plan's fingerprint is saved as `plan.json` in the work
directory; a resumed conversion must find the same one, or it would mix
shards of two different plans.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence

from vidjax.data import video_worker
from vidjax.data.builders import atomic_files
from vidjax.errors import VidjaxError

PLAN_VERSION = 1

VideoTask = video_worker.VideoTask


@dataclasses.dataclass(frozen=True)
class ShardJob:
  """One shard: its videos, where it goes, how to decode (picklable)."""

  split: str
  index: int
  num_shards: int
  tasks: tuple[VideoTask, ...]
  tfrecord_path: str
  results_path: str
  settings: video_worker.Settings

  @property
  def finished(self) -> bool:
    """Both files exist: the shard was renamed, then its results written."""
    return (os.path.exists(self.results_path)
            and os.path.exists(self.tfrecord_path))


def order_key(split: str, key: str) -> bytes:
  return hashlib.blake2b(f'{split}\0{key}'.encode(), digest_size=16).digest()


def plan_shards(name: str, tasks: Mapping[str, Sequence[VideoTask]],
                videos_per_shard: int) -> dict[str, list[list[VideoTask]]]:
  """{split: [tasks of shard i]}: hash-ordered, sizes differ by at most one."""
  plan = {}
  for split, split_tasks in tasks.items():
    keys = [t.key for t in split_tasks]
    if len(set(keys)) != len(keys):
      dup = collections.Counter(keys).most_common(1)[0][0]
      raise VidjaxError(f'{name} {split}: video {dup!r} is listed '
                        'more than once')
    ordered = sorted(split_tasks, key=lambda t: order_key(split, t.key))
    n = max(1, -(-len(ordered) // videos_per_shard))
    bounds = [len(ordered) * i // n for i in range(n + 1)]
    plan[split] = [ordered[bounds[i]:bounds[i + 1]] for i in range(n)]
  return plan


def fingerprint(plan: Mapping[str, Sequence[Sequence[VideoTask]]],
                settings: Sequence) -> dict:
  """What must not change between a conversion and its resumption."""
  digest = hashlib.sha256()
  for split in sorted(plan):
    for i, shard in enumerate(plan[split]):
      for t in shard:
        digest.update(
            f'{split}|{i}|{t.key}|{t.label}|{t.label_text}|{t.start_s}|'
            f'{t.end_s}\n'.encode())
  return {
      'plan_version': PLAN_VERSION,
      'config': list(settings),
      'shards': {s: len(p) for s, p in sorted(plan.items())},
      'tasks_sha256': digest.hexdigest(),
  }


def save_or_check(work_dir: str, expected: dict):
  """Saves the fingerprint, or checks it against an earlier run's."""
  os.makedirs(work_dir, exist_ok=True)
  plan_path = os.path.join(work_dir, 'plan.json')
  if os.path.exists(plan_path):
    with open(plan_path, encoding='utf-8') as f:
      previous = json.load(f)
    if previous != expected:
      raise VidjaxError(
          f'{work_dir} holds an unfinished conversion with different '
          'annotations or shard size; delete that directory to start over '
          'or rerun with the same inputs'
      )
  else:
    atomic_files.atomic_write_text(plan_path, json.dumps(expected, indent=1))


def shard_jobs(plan: Mapping[str, Sequence[Sequence[VideoTask]]],
               work_dir: str, settings: video_worker.Settings
               ) -> list[ShardJob]:
  jobs = []
  for split, shards in plan.items():
    for i, shard in enumerate(shards):
      stem = os.path.join(work_dir, f'{split}-{i:05d}-of-{len(shards):05d}')
      jobs.append(ShardJob(
          split=split, index=i, num_shards=len(shards), tasks=tuple(shard),
          tfrecord_path=stem + '.tfrecord', results_path=stem + '.json',
          settings=settings,
      ))
  return jobs
