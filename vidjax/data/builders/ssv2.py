"""Something-Something-v2 from a local copy of the videos and JSON files.

`manual_dir` holds, in any subdirectory layout:

* `something-something-v2-labels.json`: {template: class id as a string}.
  Its ids are used as given (they are the official ones pretrained
  checkpoints use; in the released file they are the alphabetical order).
* `something-something-v2-train.json`, `something-something-v2-validation.json`:
  lists of {id, label, template, placeholders}. The template ("Putting
  [something] on a surface") with its brackets removed is the class name.
* optionally `something-something-v2-test.json`: [{id}], no labels; its
  records are unlabelled (label -1).
* the videos `<id>.webm` (VP9, 12 fps, 240 px high).

The names of the newer Qualcomm release (`labels.json`, `train.json`,
`validation.json`, `test.json`) are accepted as well.

Frames are kept at the source rate by default (fps None); note that a
horizontal flip changes the meaning of the left/right classes, so don't
flip-augment SSv2 without swapping them.

  python -m vidjax.data.prepare ssv2 --manual_dir=DIR --data_dir=DIR
"""

from __future__ import annotations

import os

import tensorflow_datasets as tfds

from vidjax.data import formats
from vidjax.data import labels
from vidjax.data.builders import annotation_files
from vidjax.data.builders import kinetics
from vidjax.data.builders import raw_video
from vidjax.data.builders import split_checks
from vidjax.errors import VidjaxError

_PREFIX = 'something-something-v2-'
JSON_NAMES = {
    'labels': (f'{_PREFIX}labels.json', 'labels.json'),
    'train': (f'{_PREFIX}train.json', 'train.json'),
    'validation': (f'{_PREFIX}validation.json', 'validation.json'),
    'test': (f'{_PREFIX}test.json', 'test.json'),
}
REQUIRED = ('labels', 'train', 'validation')

_CITATION = """@inproceedings{goyal2017something,
  title={The "something something" video database for learning and evaluating
         visual common sense},
  author={Goyal, Raghav and Ebrahimi Kahou, Samira and Michalski, Vincent and
          Materzynska, Joanna and Westphal, Susanne and Kim, Heuna and
          Haenel, Valentin and Fruend, Ingo and Yianilos, Peter and
          Mueller-Freitag, Moritz and others},
  booktitle={ICCV},
  year={2017}
}"""


def _video_id(entry: dict) -> str:
  """The entry's id as a string; ValueError unless a non-empty str or int."""
  value = entry.get('id')
  if isinstance(value, bool) or not isinstance(value, (str, int)):
    raise ValueError(f'"id" {value!r} is not a string or integer')
  video_id = str(value).strip()
  if not video_id:
    raise ValueError('empty "id"')
  return video_id


def _class_name(entry: dict) -> str:
  template = entry.get('template')
  if not isinstance(template, str) or not labels.ssv2_class_name(template):
    raise ValueError(f'"template" {template!r} is not a class name')
  return labels.ssv2_class_name(template)


class Ssv2(raw_video.RawVideoBuilder):
  """Something-Something-v2 (TwentyBN/Qualcomm) as DMVR TFRecords."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      raw_video.RawVideoConfig(
          name='default',
          description='Source frame rate (12 fps), short side 256, JPEG 90.',
          fps=None, short_side=256, jpeg_quality=90,
      ),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = 'default'
  NUM_CLASSES = 174
  DESCRIPTION = ('Something-Something-v2: 220k short videos of 174 basic '
                 'object manipulations.')
  HOMEPAGE = ('https://developer.qualcomm.com/software/ai-datasets/'
              'something-something')
  CITATION = _CITATION
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Put something-something-v2-{labels,train,validation,test}.json and the '
      '<id>.webm videos under manual_dir; see docs/datasets.md.'
  )

  def _read_annotations(self, manual_dir):
    files = kinetics.find_annotation_files(manual_dir, JSON_NAMES, REQUIRED,
                                           self.name)
    raw_labels = annotation_files.load_json(files['labels'])
    if not isinstance(raw_labels, dict):
      raise VidjaxError(f'{files["labels"]}: expected an object '
                        '{template: "id"}')
    label_map = labels.LabelMap.from_indexed(raw_labels, files['labels'])
    if len(label_map) != self.NUM_CLASSES:
      self.notes.append(f'{files["labels"]} has {len(label_map)} classes; '
                        f'the official {self.name} has {self.NUM_CLASSES}')
    videos = raw_video.scan_videos(manual_dir)
    tasks = {}
    for split in ('train', 'validation', 'test'):
      if split in files:
        tasks[split] = self._split_tasks(files[split], split != 'test',
                                         label_map, videos, manual_dir)
    return label_map, tasks

  def _split_tasks(self, path, labelled, label_map, videos, manual_dir):
    """The tasks of one JSON list; one error for all bad entries."""
    entries = annotation_files.load_json(path)
    if not isinstance(entries, list):
      raise VidjaxError(f'{path}: expected a list of objects')
    problems = annotation_files.Problems(path, unit='entry')
    seen = split_checks.FirstSeen()
    split_tasks = []
    for n, entry in enumerate(entries):
      where = f'entry {n}'
      try:
        if not isinstance(entry, dict):
          raise ValueError('not an object')
        video_id = _video_id(entry)
        where = f'id {video_id}'
        if labelled:
          label = label_map.index(_class_name(entry))
          text = label_map.names[label]
        else:
          label, text = formats.MISSING_LABEL, ''
      except (ValueError, VidjaxError) as e:
        problems.add(where, str(e))
        continue
      repeat = seen.repeat(video_id, f'entry {n}', text)
      if repeat:
        problems.add(where, repeat)
        continue
      found = videos.get(video_id)
      video = found[0] if found else None
      split_tasks.append(raw_video.VideoTask(
          key=video_id,
          path=video,
          filename=(os.path.relpath(video, manual_dir) if video
                    else f'{video_id}.webm'),
          label=label,
          label_text=text,
      ))
    problems.raise_if_any()
    return split_tasks
