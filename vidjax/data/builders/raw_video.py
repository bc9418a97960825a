"""Builders that convert a local copy of raw video files into DMVR TFRecords.

`RawVideoBuilder` is the base of the Kinetics and Something-Something-v2
builders. A subclass reads the annotation files under `manual_dir` and returns
per split a list of `VideoTask`s (which file, which label, which time window);
this module does the rest:

* **Plan** (`shard_plan`). Each split's tasks are ordered by a hash of their
  key (so the class-sorted annotation files end up mixed across and within
  shards) and cut into shards of `videos_per_shard`. The plan is fixed by
  the annotation files and the builder config alone, and saved as
  `plan.json`.
* **Parallel conversion** (`conversion_pool`, `shard_writer`). A pool of
  `workers` processes (spawned, each decoding with one FFmpeg thread) runs
  `video_worker.convert_video` per video: decode with
  `video_io.decode_video` at the config's fps and short side, JPEG-encode,
  serialize the SequenceExample. Workers import neither
  TensorFlow nor TFDS (fast start, ~40 MB each); this process receives the
  records in plan order and writes each shard with `tf.io.TFRecordWriter`.
  A progress line (`progress`) shows videos done, rate and ETA.
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
  Problems with the annotations stop the run before any conversion with one
  `VidjaxError` naming the file and line: a missing or malformed file, a
  line that is not exactly one video (`annotation_files`), an unknown label,
  a video listed twice or in two splits (`split_checks`).
* **Manifest** (`manifest`). `manifest.csv` next to `dataset_info.json`
  lists every video of every split: status (`ok`, `missing`,
  `undecodable`), reason, frames, duration, source fps.

At the end the finished shards are hard-linked (copied across filesystems)
into TFDS's directory as `<name>-<split>.tfrecord-0000i-of-0000n`, skipping
shards in which no video decoded, and TFDS writes `dataset_info.json` with the
shard lengths and the class list. A split none of whose videos exist (e.g. a
Kinetics test split that was not downloaded) is left out and reported.

**Atomic.** The version directory (shards, `dataset_info.json`,
`features.json`, `label.labels.txt`, `manifest.csv`) is assembled in TFDS's
temporary `incomplete.*` directory and renamed into place only when all of
it is written, so a failed or killed run never leaves a dataset that looks
prepared. A re-preparation (`--overwrite`) builds the new one beside the old
and swaps it in only when complete (`replacement`). A file error (a full
disk) is one `VidjaxError` naming the directory and the reason; finished
shards stay in the work directory for the resumption.

Config names encode the settings (`config_names`): 'fps25_short256_q90'.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import json
import logging as std_logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from absl import logging as absl_logging
import tensorflow_datasets as tfds

from vidjax.data import video_worker
from vidjax.data.builders import atomic_files
from vidjax.data.builders import base
from vidjax.data.builders import config_names
from vidjax.data.builders import conversion_pool
from vidjax.data.builders import disk_errors
from vidjax.data.builders import manifest
from vidjax.data.builders import progress as progress_lib
from vidjax.data.builders import replacement
from vidjax.data.builders import shard_plan
from vidjax.data.builders import shard_writer
from vidjax.data.builders import split_checks
from vidjax.errors import VidjaxError

# The names other modules and users reach through this one.
RawVideoConfig = config_names.RawVideoConfig
config_name = config_names.config_name
parse_config_name = config_names.parse_config_name
MANIFEST_NAME = manifest.MANIFEST_NAME
OK, MISSING, UNDECODABLE = manifest.OK, manifest.MISSING, manifest.UNDECODABLE
STATUSES = manifest.STATUSES
summarize = manifest.summarize
VideoTask = video_worker.VideoTask

# Video file extensions looked for under manual_dir.
VIDEO_EXTENSIONS = ('.mp4', '.webm', '.mkv', '.avi', '.mov')


class _QuietCustomConfig(std_logging.Filter):
  """Drops TFDS's warning for our settings-named configs (they are normal)."""

  def filter(self, record):
    return not str(record.msg).startswith(
        'Using custom data configuration: RawVideoConfig')


absl_logging.get_absl_logger().addFilter(_QuietCustomConfig())



def walk(root: str | os.PathLike) -> Iterator[tuple[str, list[str]]]:
  """(directory, sorted file names) of every directory under `root`.

  os.walk skips a directory it cannot list without a word; its videos
  would then all read as missing. Here that is an error naming it.
  """

  def unreadable(error: OSError):
    raise VidjaxError(f'cannot list {error.filename}: {error.strerror}; its '
                      'files would be taken for missing') from error

  for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable,
                                              followlinks=True):
    dirnames.sort()
    yield dirpath, sorted(filenames)


def scan_videos(root: str | os.PathLike) -> dict[str, list[str]]:
  """{file stem: [paths]} of every video file under `root` (one walk).

  One directory walk instead of a stat per annotation row: with 650k Kinetics
  rows that is the difference between seconds and minutes on network disks,
  and it makes any subdirectory layout (per split, per class, flat) work.
  """
  found: dict[str, list[str]] = collections.defaultdict(list)
  for dirpath, filenames in walk(root):
    for name in filenames:
      stem, ext = os.path.splitext(name)
      if ext.lower() in VIDEO_EXTENSIONS and not name.startswith('.'):
        found[stem].append(os.path.join(dirpath, name))
  return found


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
    # Facts the run summary prints (a class count that differs from the
    # official one): logging is quiet in the command line.
    self.notes: list[str] = []
    super().__init__(**kwargs)
    if replacement.recover(os.fspath(self.data_path)):
      # A re-preparation was killed between its two renames.
      self.info.read_from_directory(self.data_path)

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

  def download_and_prepare(self, *, download_dir=None, download_config=None,
                           **kwargs):
    """TFDS's, plus: a re-preparation (a download mode that overwrites)
    replaces the dataset only once the new one is complete
    (`replacement`), and a file error (a full disk) is one VidjaxError
    naming the directory, the reason and how to resume."""
    config = download_config or tfds.download.DownloadConfig()
    data_path = os.fspath(self.data_path)
    overwrite = config.download_mode.overwrite_dataset
    try:
      if os.path.lexists(data_path) and not overwrite and not (
          self.is_prepared()):
        # TFDS would take any directory there for a prepared dataset.
        raise VidjaxError(
            f'{data_path} exists but holds no complete dataset (no '
            'dataset_info.json and features.json); move it away or prepare '
            'again with --overwrite')
      if overwrite and os.path.lexists(data_path):
        self._prepare_beside(download_dir, config, **kwargs)
      else:
        super().download_and_prepare(download_dir=download_dir,
                                     download_config=config, **kwargs)
    except Exception as e:  # pylint: disable=broad-except
      if not disk_errors.is_file_error(e):
        raise
      raise VidjaxError(self._file_error_message(e, data_path)) from e

  def _file_error_message(self, error, data_path) -> str:
    directory, reason = disk_errors.where_and_why(
        error, os.path.dirname(data_path))
    if os.path.basename(directory).startswith('incomplete.'):
      # TFDS's temporary directory, deleted by now: name the dataset's.
      directory = data_path
    text = f'{self.name}: preparation failed in {directory}: {reason}'
    work, done = self.last_work_dir, 0
    with contextlib.suppress(OSError, TypeError):  # None, or unreadable.
      done = sum(n.endswith('.json') and n != 'plan.json'
                 for n in os.listdir(work))
    if done:
      return (f'{text}; the {done} finished shard(s) in {work} are kept: fix '
              'that and run the same command again to resume')
    return f'{text}; fix that and run the same command again'

  def _prepare_beside(self, download_dir, config, **kwargs):
    """Prepares into a staging data_dir, then swaps it in (`replacement`)."""
    root = os.fspath(self.data_dir_root)
    staging = replacement.staging_data_dir(
        root, self.name, self.builder_config.name, str(self.version))
    replacement.remove_staging(root, staging)  # Of a killed run.
    clone = type(self)(
        config=self.builder_config, data_dir=staging, workers=self.workers,
        videos_per_shard=self.videos_per_shard, progress=self.progress,
        interrupt_after=self.interrupt_after)
    try:
      # The usual download_dir, so the work directory (and a resumption of
      # an interrupted re-preparation) is the same as a first run's.
      clone.download_and_prepare(
          download_dir=download_dir or os.path.join(root, 'downloads'),
          download_config=dataclasses.replace(
              config, download_mode=(
                  tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)),
          **kwargs)
      replacement.swap_in(os.fspath(clone.data_path),
                          os.fspath(self.data_path))
    finally:
      self.last_work_dir = clone.last_work_dir
      self.converted_this_run = clone.converted_this_run
      self.notes = clone.notes
    replacement.remove_staging(root, staging)
    # This builder read the old dataset's info. ClassLabel takes names only
    # once (and read_from_directory drops its error in a thread pool), so
    # the label feature is initialised again with the new names.
    self.info.features['label'].__init__(names=list(clone.class_names))
    self.info.read_from_directory(self.data_path)

  def _work_dir(self, dl_manager) -> str:
    return os.path.join(
        os.fspath(dl_manager.download_dir), 'vidjax_prepare', self.name,
        self.builder_config.name, str(self.version),
    )

  def _download_and_prepare(self, dl_manager, download_config=None):
    del download_config
    self.notes = []
    manual_dir = self._manual_dir(dl_manager)
    label_map, tasks = self._read_annotations(manual_dir)
    split_checks.check_disjoint(self.name, tasks)
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
    cfg = self.builder_config
    plan = shard_plan.plan_shards(self.name, tasks, self.videos_per_shard)
    shard_plan.save_or_check(work_dir, shard_plan.fingerprint(
        plan, (cfg.fps, cfg.short_side, cfg.jpeg_quality)))
    for name in os.listdir(work_dir):
      if '.tmp' in name:  # Partial shards of an interrupted run.
        os.remove(os.path.join(work_dir, name))

    settings = video_worker.Settings(
        fps=cfg.fps, short_side=cfg.short_side, jpeg_quality=cfg.jpeg_quality,
        # One FFmpeg thread per process when there is a process per core.
        decode_threads=1 if self.workers > 1 else None,
    )
    jobs = shard_plan.shard_jobs(plan, work_dir, settings)
    todo = [j for j in jobs if not j.finished]
    total = sum(len(j.tasks) for j in jobs)
    already = total - sum(len(j.tasks) for j in todo)
    progress = progress_lib.ConversionProgress(
        f'{self.name}/{cfg.name}', total, already) if self.progress else None
    num_videos = total - already
    items = ((task, job.settings, job.split, job.index)
             for job in todo for task in job.tasks)
    with conversion_pool.converted_in_order(
        self.name, items, min(self.workers, num_videos)) as results:
      shard_writer.write_shards(todo, results, progress, self.interrupt_after)
    self.converted_this_run = num_videos

    results = {}
    for job in jobs:
      with open(job.results_path, encoding='utf-8') as f:
        results[(job.split, job.index)] = json.load(f)
    self._assemble(plan, jobs, results)

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
        atomic_files.link_or_copy(job.tfrecord_path, dest)
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
    manifest.write_manifest(os.path.join(data_path, MANIFEST_NAME), rows)

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
    return manifest.read_manifest(self.manifest_path)

