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

import json
import os

import tensorflow_datasets as tfds

from vidjax.data import formats
from vidjax.data import labels
from vidjax.data.builders import kinetics
from vidjax.data.builders import raw_video
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


def _load_json(path: str):
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise VidjaxError(f'{path}: cannot read JSON: {e}') from e


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
    raw_labels = _load_json(files['labels'])
    if not isinstance(raw_labels, dict):
      raise VidjaxError(f'{files["labels"]}: expected an object '
                        '{template: "id"}')
    label_map = labels.LabelMap.from_indexed(raw_labels, files['labels'])
    videos = raw_video.scan_videos(manual_dir)
    tasks = {}
    for split in ('train', 'validation', 'test'):
      if split not in files:
        continue
      path = files[split]
      entries = _load_json(path)
      if not isinstance(entries, list):
        raise VidjaxError(f'{path}: expected a list of objects')
      split_tasks = []
      for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or 'id' not in entry:
          raise VidjaxError(f'{path}: entry {n} has no "id"')
        video_id = str(entry['id']).strip()
        if split == 'test' or 'template' not in entry:
          if split != 'test':
            raise VidjaxError(f'{path}: entry {n} (id {video_id}) has no '
                              '"template"')
          label, text = formats.MISSING_LABEL, ''
        else:
          name = labels.ssv2_class_name(entry['template'])
          label = label_map.index(name, where=f'{path} (id {video_id})')
          text = label_map.names[label]
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
      tasks[split] = split_tasks
    return label_map, tasks
