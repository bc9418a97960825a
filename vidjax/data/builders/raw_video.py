"""Builders that convert a local copy of raw video files into DMVR TFRecords.

`RawVideoBuilder` is the base of the Kinetics and Something-Something-v2
builders. A subclass reads the annotation files under `manual_dir` and returns
per split a list of `VideoTask`s (which file, which label, which time window);
this module does the rest:

* **Plan.** Each split's tasks are ordered by a hash of their key (so the
  class-sorted annotation files end up mixed across and within shards) and cut
  into shards of `videos_per_shard`. The plan is fixed by the annotation
  files and the builder config alone, and saved as `plan.json`.
* **Parallel conversion.** A pool of `workers` processes (spawned, each
  decoding with one FFmpeg thread) runs `video_worker.convert_video` per
  video: decode with `video_io.decode_video` at the config's fps and short
  side, JPEG-encode, serialize the SequenceExample. Workers import neither
  TensorFlow nor TFDS (fast start, ~40 MB each); this process receives the
  records in plan order and writes each shard with `tf.io.TFRecordWriter`.
  A progress line shows videos done, rate and ETA.
* **Resumable.** Shards are written into a work directory outside TFDS's
  temporary directory (TFDS deletes that one when a run fails): first as
  `*.tmp`, renamed when complete, then a per-shard JSON of the results is
  written the same way. A shard whose JSON exists is finished and never
  redone, so an interrupted run (Ctrl-C, a kill, a crash) resumes where it
  stopped when started again with the same arguments. The work directory is
  `<download_dir>/vidjax_prepare/<name>/<config>/<version>/` (download_dir
  defaults to `<data_dir>/downloads`) and is deleted after success.
* **Bad videos are data, not errors.** A missing file, a corrupt, truncated or
  empty video is skipped and recorded with its reason; the run goes on.
  Problems with the annotations (missing file, unknown label) stop the run
  with one `VidjaxError` naming the file.
* **Manifest.** `manifest.csv` next to `dataset_info.json` lists every video of
  every split: status (`ok`, `missing`, `undecodable`), reason, frames,
  duration, source fps.

At the end the finished shards are hard-linked (copied across filesystems)
into TFDS's directory as `<name>-<split>.tfrecord-0000i-of-0000n`, skipping
shards in which no video decoded, and TFDS writes `dataset_info.json` with the
shard lengths and the class list. A split none of whose videos exist (e.g. a
Kinetics test split that was not downloaded) is left out and reported.
"""

from __future__ import annotations

import abc
import collections
import concurrent.futures
import csv
import dataclasses
import hashlib
import itertools
import json
import logging as std_logging
import multiprocessing
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging as absl_logging
import tensorflow_datasets as tfds

from vidjax.data import video_worker
from vidjax.data.builders import base
from vidjax.errors import VidjaxError

MANIFEST_NAME = 'manifest.csv'
MANIFEST_FIELDS = (
    'split', 'key', 'video', 'label', 'label_text', 'status', 'reason',
    'num_frames', 'duration_s', 'source_fps', 'shard',
)
OK, MISSING, UNDECODABLE = (video_worker.OK, video_worker.MISSING,
                            video_worker.UNDECODABLE)
STATUSES = (OK, MISSING, UNDECODABLE)

# Video file extensions looked for under manual_dir.
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov')

_PLAN_VERSION = 1


class _QuietCustomConfig(std_logging.Filter):
  """Drops TFDS's warning for our settings-named configs (they are normal)."""

  def filter(self, record):
    return not str(record.msg).startswith(
        'Using custom data configuration: RawVideoConfig')


absl_logging.get_absl_logger().addFilter(_QuietCustomConfig())


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


@dataclasses.dataclass(eq=False)
class RawVideoConfig(tfds.core.BuilderConfig):
  """How videos are stored.

  Attributes:
    fps: frames per second stored (nearest-in-time selection); None keeps
      every source frame.
    short_side: frames are resized so the shorter side is this; None keeps
      the source size.
    jpeg_quality: JPEG quality of the stored frames.
  """

  fps: float | None = 25.0
  short_side: int | None = 256
  jpeg_quality: int = 90


def config_name(fps: float | None, short_side: int | None,
                jpeg_quality: int) -> str:
  """Canonical config name for these settings, e.g. 'fps25_short256_q90'."""
  fps_part = 'native' if fps is None else f'{float(fps):g}'
  short_part = 'orig' if short_side is None else str(int(short_side))
  return f'fps{fps_part}_short{short_part}_q{int(jpeg_quality)}'


_CONFIG_NAME_RE = re.compile(
    r'^fps(?P<fps>native|\d+(?:\.\d+)?)_short(?P<short>orig|\d+)'
    r'_q(?P<q>\d+)$'
)


def parse_config_name(name: str) -> RawVideoConfig | None:
  """The config a `config_name` string denotes, or None if it is not one."""
  m = _CONFIG_NAME_RE.match(name)
  if not m:
    return None
  fps = None if m['fps'] == 'native' else float(m['fps'])
  short = None if m['short'] == 'orig' else int(m['short'])
  quality = int(m['q'])
  if (fps is not None and fps <= 0) or (short is not None and short <= 0) or (
      not 1 <= quality <= 100):
    return None
  return RawVideoConfig(
      name=name,
      description=f'{m["fps"]} fps, short side {m["short"]}, JPEG q{quality}.',
      fps=fps,
      short_side=short,
      jpeg_quality=quality,
  )


def scan_videos(root: str | os.PathLike) -> dict[str, list[str]]:
  """{file stem: [paths]} of every video file under `root` (one walk).

  One directory walk instead of a stat per annotation row: with 650k Kinetics
  rows that is the difference between seconds and minutes on network disks,
  and it makes any subdirectory layout (per split, per class, flat) work.
  """
  found: dict[str, list[str]] = collections.defaultdict(list)
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames.sort()
    for name in sorted(filenames):
      stem, ext = os.path.splitext(name)
      if ext.lower() in VIDEO_EXTENSIONS and not name.startswith('.'):
        found[stem].append(os.path.join(dirpath, name))
  return found


def _order_key(split: str, key: str) -> bytes:
  return hashlib.blake2b(f'{split}\0{key}'.encode(), digest_size=16).digest()


def _atomic_write_text(path: str, text: str):
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


# -----------------------------------------------------------------------------
# Progress.
# -----------------------------------------------------------------------------


def _format_seconds(s: float) -> str:
  s = int(round(s))
  return f'{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}'


class _Progress:
  """One status line: done/total, rate, ETA (stderr; redrawn on a TTY)."""

  def __init__(self, label: str, total: int, already: int, stream=None):
    self.label, self.total, self.already = label, total, already
    self.stream = stream or sys.stderr
    self.tty = hasattr(self.stream, 'isatty') and self.stream.isatty()
    self.start = time.monotonic()
    self.last_print = 0.0
    self.done_now = 0

  def line(self, done_now: int) -> str:
    elapsed = max(time.monotonic() - self.start, 1e-9)
    done = self.already + done_now
    rate = done_now / elapsed
    left = self.total - done
    eta = _format_seconds(left / rate) if rate > 0 else '?'
    pct = 100.0 * done / max(self.total, 1)
    resumed = f', {self.already} resumed' if self.already else ''
    return (f'{self.label}: {done}/{self.total} videos ({pct:.1f}%{resumed}), '
            f'{rate:.2f} videos/s, ETA {eta}')

  def update(self, done_now: int, final: bool = False):
    self.done_now = done_now
    now = time.monotonic()
    interval = 0.5 if self.tty else 30.0
    if not final and now - self.last_print < interval:
      return
    self.last_print = now
    text = self.line(done_now)
    if self.tty:
      self.stream.write('\r' + text + ('\n' if final else ''))
    else:
      self.stream.write(text + '\n')
    self.stream.flush()


# -----------------------------------------------------------------------------
# The builder.
# -----------------------------------------------------------------------------


class RawVideoBuilder(base.DmvrBuilder):
  """Converts video files under `manual_dir` into DMVR TFRecords.

  Subclasses implement `_read_annotations(manual_dir)` returning the
  `LabelMap` and per split the `VideoTask`s. Keyword arguments beyond TFDS's:
  `workers` (processes; default all cores), `videos_per_shard`, `progress`
  (print the progress line), `interrupt_after` (tests: raise
  KeyboardInterrupt after converting that many videos, as a Ctrl-C would).
  """

  VERSION = tfds.core.Version('1.0.0')
  BUILDER_CONFIGS = [RawVideoConfig(name='default')]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'
  VIDEOS_PER_SHARD = 100
  MANUAL_DOWNLOAD_INSTRUCTIONS = 'See docs/datasets.md.'

  def __init__(self, *, workers: int | None = None,
               videos_per_shard: int | None = None, progress: bool = True,
               interrupt_after: int | None = None, **kwargs):
    config = kwargs.get('config')
    if isinstance(config, str) and config not in self.builder_configs:
      parsed = parse_config_name(config.split(':')[0])
      if parsed is not None:
        kwargs['config'] = parsed
    self.workers = workers or os.cpu_count() or 1
    self.videos_per_shard = videos_per_shard or self.VIDEOS_PER_SHARD
    self.progress = progress
    self.interrupt_after = interrupt_after
    self._label_map = None  # Before super(): TFDS builds info right away.
    self.last_work_dir: str | None = None
    # Videos decoded by this call (not counting resumed shards).
    self.converted_this_run = 0
    super().__init__(**kwargs)

  @classmethod
  def accepts_config(cls, name: str) -> bool:
    """Registered config names and any `config_name(...)` string."""
    name = name.split(':')[0]
    return name in cls.builder_configs or parse_config_name(name) is not None

  # ---------------------------------------------------------------------------
  # What subclasses provide.
  # ---------------------------------------------------------------------------

  @abc.abstractmethod
  def _read_annotations(
      self, manual_dir: str
  ) -> tuple[Any, Mapping[str, Sequence[VideoTask]]]:
    """(LabelMap, {split: tasks}) from the annotation files in manual_dir.

    Raises VidjaxError naming the file for missing or malformed annotation
    files and labels outside the map.
    """

  # ---------------------------------------------------------------------------
  # DmvrBuilder hooks.
  # ---------------------------------------------------------------------------

  def _class_names(self):
    # Unknown until the annotations are read; a prepared dataset's names come
    # from its label.labels.txt.
    return None if self._label_map is None else self._label_map.names

  def _split_generators(self, dl_manager):
    raise NotImplementedError('RawVideoBuilder writes its own shards')

  def _metadata(self):
    cfg = self.builder_config
    return {'fps': cfg.fps, 'short_side': cfg.short_side,
            'jpeg_quality': cfg.jpeg_quality}

  # ---------------------------------------------------------------------------
  # Preparation.
  # ---------------------------------------------------------------------------

  def _manual_dir(self, dl_manager) -> str:
    path = os.fspath(getattr(dl_manager, '_manual_dir', None) or '')
    if not path or not os.path.isdir(path):
      raise VidjaxError(
          f'{self.name}/{self.builder_config.name} is not prepared under '
          f'{os.fspath(self.data_dir_root)} and its manual_dir '
          f'{path or "(none)"} does not exist; convert the raw videos first: '
          f'python -m vidjax.data.prepare {self.name} --manual_dir=DIR '
          f'--data_dir={os.fspath(self.data_dir_root)}'
      )
    if not os.listdir(path):
      raise VidjaxError(
          f'manual_dir {path} is empty; it should hold the {self.name} '
          'annotation files and videos (see docs/datasets.md)'
      )
    return path

  def _work_dir(self, dl_manager) -> str:
    return os.path.join(
        os.fspath(dl_manager.download_dir), 'vidjax_prepare', self.name,
        self.builder_config.name, str(self.version),
    )

  def _plan(self, tasks: Mapping[str, Sequence[VideoTask]], work_dir: str):
    """{split: [tasks of shard i]}; checks it against an earlier run's plan."""
    plan = {}
    for split, split_tasks in tasks.items():
      keys = [t.key for t in split_tasks]
      if len(set(keys)) != len(keys):
        dup = collections.Counter(keys).most_common(1)[0][0]
        raise VidjaxError(f'{self.name} {split}: video {dup!r} is listed '
                          'more than once')
      ordered = sorted(split_tasks, key=lambda t: _order_key(split, t.key))
      n = max(1, -(-len(ordered) // self.videos_per_shard))
      # Even shards: sizes differ by at most one.
      bounds = [len(ordered) * i // n for i in range(n + 1)]
      plan[split] = [ordered[bounds[i]:bounds[i + 1]] for i in range(n)]
    digest = hashlib.sha256()
    for split in sorted(plan):
      for i, shard in enumerate(plan[split]):
        for t in shard:
          digest.update(
              f'{split}|{i}|{t.key}|{t.label}|{t.label_text}|{t.start_s}|'
              f'{t.end_s}\n'.encode())
    cfg = self.builder_config
    fingerprint = {
        'plan_version': _PLAN_VERSION,
        'config': [cfg.fps, cfg.short_side, cfg.jpeg_quality],
        'shards': {s: len(p) for s, p in sorted(plan.items())},
        'tasks_sha256': digest.hexdigest(),
    }
    os.makedirs(work_dir, exist_ok=True)
    plan_path = os.path.join(work_dir, 'plan.json')
    if os.path.exists(plan_path):
      with open(plan_path, encoding='utf-8') as f:
        previous = json.load(f)
      if previous != fingerprint:
        raise VidjaxError(
            f'{work_dir} holds an unfinished conversion with different '
            'annotations or shard size; delete that directory to start over '
            'or rerun with the same inputs'
        )
    else:
      _atomic_write_text(plan_path, json.dumps(fingerprint, indent=1))
    return plan

  def _download_and_prepare(self, dl_manager, download_config=None):
    del download_config
    manual_dir = self._manual_dir(dl_manager)
    label_map, tasks = self._read_annotations(manual_dir)
    self._label_map = label_map
    self.info.features['label'].names = list(label_map.names)
    if not any(t.path for ts in tasks.values() for t in ts):
      raise VidjaxError(
          f'no {self.name} videos found under {manual_dir} (looked for '
          f'{", ".join(VIDEO_EXTENSIONS)} files named as in the annotations, '
          'e.g. ' + next(
              (t.filename for ts in tasks.values() for t in ts), '?') + ')'
      )
    work_dir = self._work_dir(dl_manager)
    self.last_work_dir = work_dir
    plan = self._plan(tasks, work_dir)
    for name in os.listdir(work_dir):
      if '.tmp' in name:  # Partial shards of an interrupted run.
        os.remove(os.path.join(work_dir, name))

    cfg = self.builder_config
    settings = video_worker.Settings(
        fps=cfg.fps, short_side=cfg.short_side, jpeg_quality=cfg.jpeg_quality,
        # One FFmpeg thread per process when there is a process per core.
        decode_threads=1 if self.workers > 1 else None,
    )
    jobs = []
    for split, shards in plan.items():
      for i, shard in enumerate(shards):
        stem = os.path.join(work_dir, f'{split}-{i:05d}-of-{len(shards):05d}')
        jobs.append(ShardJob(
            split=split, index=i, num_shards=len(shards), tasks=tuple(shard),
            tfrecord_path=stem + '.tfrecord', results_path=stem + '.json',
            settings=settings,
        ))
    done = [j for j in jobs if os.path.exists(j.results_path)
            and os.path.exists(j.tfrecord_path)]
    todo = [j for j in jobs if j not in done]
    total = sum(len(j.tasks) for j in jobs)
    already = sum(len(j.tasks) for j in done)
    progress = _Progress(f'{self.name}/{cfg.name}', total, already) if (
        self.progress) else None
    self._run_jobs(todo, progress)
    self.converted_this_run = sum(len(j.tasks) for j in todo)

    results = {}
    for job in jobs:
      with open(job.results_path, encoding='utf-8') as f:
        results[(job.split, job.index)] = json.load(f)
    self._assemble(plan, jobs, results)

  def _run_jobs(self, jobs: list[ShardJob], progress: _Progress | None):
    """Converts the videos of `jobs`, writing each shard as it completes."""
    items = ((task, job.settings, job.split, job.index)
             for job in jobs for task in job.tasks)
    num_videos = sum(len(j.tasks) for j in jobs)
    workers = min(self.workers, num_videos)
    if workers <= 1:
      self._write_shards(jobs, map(video_worker.convert_video, items),
                         progress)
      return
    # Spawned, not forked: the parent has TensorFlow's threads running.
    # ProcessPoolExecutor rather than Pool: a worker that dies (e.g. a
    # script without an `if __name__ == '__main__'` guard, re-run by every
    # spawned child) breaks the pool with an error instead of a silent hang.
    executor = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context('spawn'),
        initializer=video_worker.init_worker)

    def in_order():
      # A bounded window of submitted videos, consumed in plan order, so
      # each shard is written front to back and memory stays bounded.
      window = collections.deque()
      for item in itertools.islice(items, 4 * workers):
        window.append(executor.submit(video_worker.convert_video, item))
      while window:
        result = window.popleft().result()
        for item in itertools.islice(items, 1):
          window.append(executor.submit(video_worker.convert_video, item))
        yield result

    try:
      self._write_shards(jobs, in_order(), progress)
    except concurrent.futures.process.BrokenProcessPool as e:
      raise VidjaxError(
          f'{self.name}: a conversion worker process died ({e}); when '
          "preparing from a script, put the call under `if __name__ == "
          "'__main__':` (workers are spawned and import the main module)"
      ) from e
    finally:
      executor.shutdown(wait=True, cancel_futures=True)

  def _write_shards(self, jobs, results, progress):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    count = 0
    for job in jobs:
      rows = []
      tmp = f'{job.tfrecord_path}.tmp{os.getpid()}'
      with tf.io.TFRecordWriter(tmp) as writer:
        for _ in job.tasks:
          record, row = next(results)
          if record is not None:
            writer.write(record)
          rows.append(row)
          count += 1
          if progress:
            progress.update(count)
          if self.interrupt_after is not None and count >= self.interrupt_after:
            raise KeyboardInterrupt
      # The shard is complete only once renamed, and counted as finished
      # only once its results are written too.
      os.replace(tmp, job.tfrecord_path)
      _atomic_write_text(job.results_path, json.dumps(rows))
    if progress:
      progress.update(count, final=True)

  def _assemble(self, plan, jobs, results):
    """Links finished shards into TFDS's directory; writes the manifest."""
    data_path = os.fspath(self.data_path)
    rows = []
    split_infos = []
    for split in plan:
      split_jobs = sorted((j for j in jobs if j.split == split),
                          key=lambda j: j.index)
      kept = []
      for job in split_jobs:
        n_ok = sum(r['status'] == OK for r in results[(split, job.index)])
        if n_ok:
          kept.append((job, n_ok))
      if not kept:
        for job in split_jobs:
          rows.extend(dict(r, shard='') for r in results[(split, job.index)])
        continue
      template = self._get_filename_template(split_name=split)
      shard_lengths, num_bytes = [], 0
      renumber = {}
      for new_index, (job, n_ok) in enumerate(kept):
        dest = os.fspath(template.sharded_filepath(
            shard_index=new_index, num_shards=len(kept)))
        _link_or_copy(job.tfrecord_path, dest)
        shard_lengths.append(n_ok)
        num_bytes += os.path.getsize(dest)
        renumber[job.index] = new_index
      for job in split_jobs:
        for row in results[(split, job.index)]:
          row = dict(row)
          row['shard'] = renumber.get(job.index, '') if row['status'] == OK else ''
          rows.append(row)
      split_infos.append(tfds.core.SplitInfo(
          name=split, shard_lengths=shard_lengths, num_bytes=num_bytes,
          filename_template=template,
      ))
    if not split_infos:
      raise VidjaxError(f'{self.name}: no video could be decoded; see the '
                        'reasons in ' + os.path.join(
                            self.last_work_dir or '', '*.json'))
    self.info.set_splits(tfds.core.SplitDict(split_infos))
    write_manifest(os.path.join(data_path, MANIFEST_NAME), rows)

  def _post_download_and_prepare_hook(self):
    # Only now is the dataset safely in its final place.
    if self.last_work_dir and os.path.isdir(self.last_work_dir):
      shutil.rmtree(self.last_work_dir, ignore_errors=True)
      # And the then empty <name>/<config> parents, up to vidjax_prepare.
      parent = os.path.dirname(self.last_work_dir)
      for _ in range(3):
        try:
          os.rmdir(parent)
        except OSError:
          break
        parent = os.path.dirname(parent)

  # ---------------------------------------------------------------------------
  # After preparation.
  # ---------------------------------------------------------------------------

  @property
  def manifest_path(self) -> str:
    return os.path.join(os.fspath(self.data_path), MANIFEST_NAME)

  def read_manifest(self) -> list[dict[str, str]]:
    return read_manifest(self.manifest_path)


def _link_or_copy(src: str, dest: str):
  if os.path.exists(dest):
    os.remove(dest)
  try:
    os.link(src, dest)
  except OSError:
    shutil.copyfile(src, dest)


def write_manifest(path: str, rows: list[dict[str, Any]]):
  order = {s: i for i, s in enumerate(('train', 'validation', 'test'))}
  rows = sorted(rows, key=lambda r: (order.get(r['split'], 9), r['split'],
                                     r['key']))
  tmp = f'{path}.tmp'
  with open(tmp, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
  os.replace(tmp, path)


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
