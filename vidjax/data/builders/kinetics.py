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

The label map is the sorted list of the classes in train.csv; a validation or
test label outside it is an error naming the file and line. Missing videos
(5-10% of Kinetics in practice) are recorded in the manifest and skipped.

  python -m vidjax.data.prepare kinetics400 --manual_dir=DIR --data_dir=DIR
"""

from __future__ import annotations

import csv
import os

from absl import logging
import tensorflow_datasets as tfds

from vidjax.data import formats
from vidjax.data import labels
from vidjax.data.builders import raw_video
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
    VidjaxError: a required file is absent, or a name occurs twice (two
      dataset versions in one directory would otherwise mix silently).
  """
  wanted = {n for ns in names.values() for n in ns}
  found: dict[str, list[str]] = {}
  for dirpath, dirnames, filenames in os.walk(manual_dir, followlinks=True):
    dirnames.sort()
    for name in filenames:
      if name in wanted:
        found.setdefault(name, []).append(os.path.join(dirpath, name))
  out = {}
  for split, candidates in names.items():
    for name in candidates:
      paths = found.get(name, [])
      if len(paths) > 1:
        raise VidjaxError(
            f'{what}: several {name} under {manual_dir}: {", ".join(paths)}; '
            'keep one dataset version per manual_dir'
        )
      if paths:
        out[split] = paths[0]
        break
    else:
      if split in required:
        raise VidjaxError(
            f'{what}: annotation file {" or ".join(candidates)} not found '
            f'under {manual_dir}'
        )
  return out


def read_csv(path: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
  """(columns, [(line number, row)]) of a Kinetics CSV."""
  try:
    with open(path, newline='', encoding='utf-8-sig') as f:
      reader = csv.DictReader(f)
      if reader.fieldnames is None:
        raise VidjaxError(f'{path}: empty file')
      reader.fieldnames = [c.strip() for c in reader.fieldnames]
      rows = [(reader.line_num, row) for row in reader]
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise VidjaxError(f'{path}: cannot read: {e}') from e
  missing = [c for c in _REQUIRED_COLUMNS if c not in reader.fieldnames]
  if missing:
    raise VidjaxError(
        f'{path}: missing column(s) {", ".join(missing)}; expected '
        'label,youtube_id,time_start,time_end,split'
    )
  return list(reader.fieldnames), rows


def _time(value: str, path: str, line: int, column: str) -> int:
  try:
    return int(round(float(value)))
  except (TypeError, ValueError) as e:
    raise VidjaxError(f'{path}:{line}: bad {column} {value!r}') from e


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
    parsed = {split: read_csv(path) for split, path in files.items()}
    train_columns, train_rows = parsed['train']
    if 'label' not in train_columns:
      raise VidjaxError(f'{files["train"]}: no label column')
    label_map = labels.LabelMap.from_names(
        (row['label'] for _, row in train_rows), source=files['train']
    )
    if self.NUM_CLASSES and len(label_map) != self.NUM_CLASSES:
      logging.warning('%s: %s has %d classes, the official %s has %d',
                      self.name, files['train'], len(label_map), self.name,
                      self.NUM_CLASSES)
    videos = raw_video.scan_videos(manual_dir)
    tasks = {}
    for split, (columns, rows) in parsed.items():
      path = files[split]
      labelled = 'label' in columns
      split_tasks = []
      for line, row in rows:
        youtube_id = (row.get('youtube_id') or '').strip()
        if not youtube_id:
          raise VidjaxError(f'{path}:{line}: empty youtube_id')
        start = _time(row.get('time_start'), path, line, 'time_start')
        end = _time(row.get('time_end'), path, line, 'time_end')
        if end <= start:
          raise VidjaxError(f'{path}:{line}: time_end {end} <= time_start '
                            f'{start}')
        text = (row.get('label') or '') if labelled else ''
        if labelled and text.strip():
          label = label_map.index(text, where=f'{path}:{line}')
          text = label_map.names[label]
        else:
          label, text = formats.MISSING_LABEL, ''
        stem = clip_name(youtube_id, start, end)
        window = (None, None, float(start))  # start_s, end_s, time offset.
        found = videos.get(stem)
        if not found:
          found = videos.get(youtube_id)
          if found:
            window = (float(start), float(end), 0.0)
        video = found[0] if found else None
        split_tasks.append(raw_video.VideoTask(
            key=stem,
            path=video,
            filename=(os.path.relpath(video, manual_dir) if video
                      else f'{stem}.mp4'),
            label=label,
            label_text=text,
            start_s=window[0],
            end_s=window[1],
            time_offset_s=window[2],
        ))
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
