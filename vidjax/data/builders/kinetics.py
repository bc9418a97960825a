"""Kinetics-400/600/700 from a local copy of the videos and official CSVs.

`manual_dir` holds the annotation CSVs and the videos, in any subdirectory
layout (everything under it is searched once):

* CSVs, by their official names: `train.csv`, `validate.csv` (DeepMind's
  archives; `val.csv` in the CVDF mirror is accepted too) and optionally
  `test.csv`. Columns `label,youtube_id,time_start,time_end,split` (extra
  columns such as `is_cc` are ignored; test CSVs without `label` give
  unlabelled records).
* Videos: trimmed clips `<youtube_id>_<start:06d>_<end:06d>.mp4` (the
  crawler's and CVDF's naming), or untrimmed downloads `<youtube_id>.mp4` cut
  here at the CSV's times. .webm/.mkv/.avi/.mov work as well.

The CSVs are read strictly (`annotation_files`): every data line is one
video or the run stops with one error naming the file and line (and how many
more lines are bad): a line that does not parse (a stray quote), the wrong
number of fields, an empty youtube_id or label (train, validation), a bad
time, a video listed twice in a file, a label outside the map. A malformed
line is an annotation problem, not a broken video: it cannot be placed in
the manifest (which video, which label?), so it is never skipped.

The label map is the sorted list of the classes in train.csv; a validation or
test label outside it is an error naming the file and line. A video in two
splits is an error (`split_checks`). Missing videos (5-10% of Kinetics in
practice) are recorded in the manifest and skipped.

  python -m vidjax.data.prepare kinetics400 --manual_dir=DIR --data_dir=DIR
"""

from __future__ import annotations

import dataclasses
import math
import os

import tensorflow_datasets as tfds

from vidjax.data import formats
from vidjax.data import labels
from vidjax.data.builders import annotation_files
from vidjax.data.builders import raw_video
from vidjax.data.builders import split_checks
from vidjax.errors import VidjaxError

# Official file names per split, in order of preference.
CSV_NAMES = {
    'train': ('train.csv',),
    'validation': ('validate.csv', 'val.csv'),
    'test': ('test.csv',),
}
REQUIRED_SPLITS = ('train', 'validation')
_REQUIRED_COLUMNS = ('youtube_id', 'time_start', 'time_end')

_CITATION = """@article{kay2017kinetics,
  title={The Kinetics Human Action Video Dataset},
  author={Kay, Will and Carreira, Joao and Simonyan, Karen and Zhang, Brian and
          Hillier, Chloe and Vijayanarasimhan, Sudheendra and Viola, Fabio and
          Green, Tim and Back, Trevor and Natsev, Paul and Suleyman, Mustafa and
          Zisserman, Andrew},
  journal={arXiv preprint arXiv:1705.06950},
  year={2017}
}"""


def clip_name(youtube_id: str, start: int, end: int) -> str:
  """The trimmed clip's file stem: `<youtube_id>_<start:06d>_<end:06d>`."""
  return f'{youtube_id}_{start:06d}_{end:06d}'


def find_annotation_files(
    manual_dir: str, names: dict[str, tuple[str, ...]],
    required: tuple[str, ...], what: str,
) -> dict[str, str]:
  """{split: path} of the annotation files under manual_dir.

  Raises:
    VidjaxError: a required file is absent, or a split has two files (one
      name twice, or two of its names, e.g. validate.csv and val.csv): two
      dataset versions in one directory would otherwise mix silently.
  """
  wanted = {n for ns in names.values() for n in ns}
  found: dict[str, list[str]] = {}
  for dirpath, filenames in raw_video.walk(manual_dir):
    for name in filenames:
      if name in wanted:
        found.setdefault(name, []).append(os.path.join(dirpath, name))
  out = {}
  for split, candidates in names.items():
    paths = [p for name in candidates for p in found.get(name, [])]
    if len(paths) > 1:
      raise VidjaxError(
          f'{what}: several {split} annotation files under {manual_dir}: '
          f'{", ".join(paths)}; keep one dataset version per manual_dir')
    if paths:
      out[split] = paths[0]
    elif split in required:
      raise VidjaxError(
          f'{what}: annotation file {" or ".join(candidates)} not found '
          f'under {manual_dir}')
  return out


EXPECTED_HEADER = 'label,youtube_id,time_start,time_end,split'


def read_csv(path: str, labelled: bool) -> annotation_files.CsvTable:
  """A Kinetics CSV read strictly (`annotation_files.read_csv`).

  labelled: the split needs labels (train, validation): the `label` column
  is required. A test CSV may lack it.
  """
  required = (('label',) if labelled else ()) + _REQUIRED_COLUMNS
  return annotation_files.read_csv(path, required, EXPECTED_HEADER)


def _time(value: str) -> int:
  """Seconds as an int; ValueError for anything but a finite number >= 0."""
  seconds = float(value)
  if not math.isfinite(seconds) or seconds < 0:
    raise ValueError(value)
  return int(round(seconds))


@dataclasses.dataclass(frozen=True)
class _Row:
  line: int
  youtube_id: str
  start: int
  end: int
  label: str  # Clean class name; '' when unlabelled.

  @property
  def key(self) -> str:
    return clip_name(self.youtube_id, self.start, self.end)


def _checked_row(line: int, row: dict[str, str], labelled: bool) -> _Row:
  """The row's values; ValueError saying what is wrong with them."""
  youtube_id = row['youtube_id'].strip()
  if not youtube_id:
    raise ValueError('empty youtube_id')
  times = []
  for column in ('time_start', 'time_end'):
    try:
      times.append(_time(row[column]))
    except ValueError:
      raise ValueError(f'bad {column} {row[column]!r}') from None
  start, end = times
  if end <= start:
    raise ValueError(f'time_end {end} <= time_start {start}')
  label = labels.clean_name(row.get('label', ''))
  if labelled and not label:
    # Read as unlabelled, it would be a training record of class -1 or an
    # evaluation record that is silently skipped.
    raise ValueError('empty label')
  return _Row(line, youtube_id, start, end, label)


def _checked_rows(table: annotation_files.CsvTable,
                  labelled: bool) -> list[_Row]:
  """The table's rows; one error for all bad lines (values, repeats)."""
  problems = annotation_files.Problems(table.path)
  seen = split_checks.FirstSeen()
  out = []
  for line, row in table.rows:
    try:
      r = _checked_row(line, row, labelled)
    except ValueError as e:
      problems.add(line, str(e))
      continue
    repeat = seen.repeat(r.key, f'line {line}', r.label)
    if repeat:
      problems.add(line, repeat)
      continue
    out.append(r)
  problems.raise_if_any()
  return out


def _task(manual_dir: str, videos: dict[str, list[str]], row: _Row,
          label: int, label_map: labels.LabelMap) -> raw_video.VideoTask:
  """The row's video: its trimmed clip, else the untrimmed download."""
  stem = row.key
  # (start_s, end_s, time offset): a trimmed clip is converted whole.
  cut = (None, None, float(row.start))
  found = videos.get(stem)
  if not found:
    found = videos.get(row.youtube_id)
    if found:
      cut = (float(row.start), float(row.end), 0.0)
  video = found[0] if found else None
  return raw_video.VideoTask(
      key=stem,
      path=video,
      filename=(os.path.relpath(video, manual_dir) if video
                else f'{stem}.mp4'),
      label=label,
      label_text=label_map.names[label] if label >= 0 else '',
      start_s=cut[0],
      end_s=cut[1],
      time_offset_s=cut[2],
  )


class _Kinetics(raw_video.RawVideoBuilder, skip_registration=True):
  """Shared by the three Kinetics versions."""

  NUM_CLASSES: int = 0
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      raw_video.RawVideoConfig(
          name='default',
          description='25 fps, short side 256, JPEG quality 90 (DMVR/Scenic).',
          fps=25.0, short_side=256, jpeg_quality=90,
      ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'
  HOMEPAGE = 'https://deepmind.com/research/open-source/kinetics'
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put the official CSVs (train.csv, validate.csv, test.csv) and the '
      'videos (<youtube_id>_<start:06d>_<end:06d>.mp4 or <youtube_id>.mp4) '
      'under manual_dir; see docs/datasets.md.'
  )

  def _read_annotations(self, manual_dir):
    files = find_annotation_files(manual_dir, CSV_NAMES, REQUIRED_SPLITS,
                                  self.name)
    rows = {}
    for split, path in files.items():
      labelled = split in REQUIRED_SPLITS
      rows[split] = _checked_rows(read_csv(path, labelled), labelled)
    # Built only from a train file that read cleanly: every row has a label.
    label_map = labels.LabelMap.from_names(
        (r.label for r in rows['train']), source=files['train'])
    if self.NUM_CLASSES and len(label_map) != self.NUM_CLASSES:
      self.notes.append(
          f'{files["train"]} has {len(label_map)} classes; the official '
          f'{self.name} has {self.NUM_CLASSES}')
    videos = raw_video.scan_videos(manual_dir)
    tasks = {}
    for split, split_rows in rows.items():
      problems = annotation_files.Problems(files[split])
      split_tasks = []
      for r in split_rows:
        try:
          label = (label_map.index(r.label) if r.label
                   else formats.MISSING_LABEL)
        except VidjaxError as e:
          problems.add(r.line, str(e))
          continue
        split_tasks.append(_task(manual_dir, videos, r, label, label_map))
      problems.raise_if_any()
      tasks[split] = split_tasks
    return label_map, tasks


class Kinetics400(_Kinetics):
  """Kinetics-400 (DeepMind, 2017) as DMVR TFRecords."""

  NUM_CLASSES = 400
  DESCRIPTION = 'Kinetics-400 human action videos, ~10 s clips, 400 classes.'


class Kinetics600(_Kinetics):
  """Kinetics-600 (DeepMind, 2018) as DMVR TFRecords."""

  NUM_CLASSES = 600
  DESCRIPTION = 'Kinetics-600 human action videos, ~10 s clips, 600 classes.'


class Kinetics700(_Kinetics):
  """Kinetics-700 (DeepMind, 2019) as DMVR TFRecords."""

  NUM_CLASSES = 700
  DESCRIPTION = 'Kinetics-700 human action videos, ~10 s clips, 700 classes.'
