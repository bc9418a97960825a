"""Something-Something-v2 builder on a tiny copy in the official layout."""

import os

import numpy as np
import pytest

from tests.data import raw_video_fixtures as fx
from vidjax.data import prepare
from vidjax.errors import VidjaxError

T = fx.SSV2_TEMPLATES
LABELS = fx.ssv2_labels()


def _entry(video_id, template):
  return {'id': str(video_id), 'label': 'a placeholder-filled sentence',
          'template': template, 'placeholders': ['x']}


def _make_ssv2(root, train=None, validation=None):
  # Videos are 12 fps VP9 WebM, 2 s, named <id>.webm in one folder.
  train = train if train is not None else [_entry(i, T[i % 4])
                                           for i in (1, 2, 3, 4)]
  validation = validation if validation is not None else [
      _entry(11, T[3]), _entry(12, T[0])]
  labels_dir = os.path.join(root, 'labels')
  fx.write_json(os.path.join(labels_dir, 'something-something-v2-labels.json'),
                LABELS)
  fx.write_json(os.path.join(labels_dir, 'something-something-v2-train.json'),
                train)
  fx.write_json(
      os.path.join(labels_dir, 'something-something-v2-validation.json'),
      validation)
  fx.write_json(os.path.join(labels_dir, 'something-something-v2-test.json'),
                [{'id': '21'}])
  for e in train + validation + [{'id': '21'}]:
    if e['id'] != '4':  # One missing video.
      fx.write_video(os.path.join(root, '20bn-something-something-v2',
                                  f'{e["id"]}.webm'), 24, 12)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('ssv2'))
  _make_ssv2(root)
  builder = prepare.make_builder(
      'ssv2', data_dir=str(tmp_path_factory.mktemp('tfds')), workers=1,
      short_side=16, videos_per_shard=2, progress=False)
  return builder, prepare.prepare(builder, manual_dir=root)


def test_records_keep_native_rate_and_official_ids(prepared):
  builder, _ = prepared
  assert builder.builder_config.fps is None  # SSv2 default: source frames.
  names = sorted(LABELS, key=lambda n: int(LABELS[n]))
  assert builder.class_names == tuple(names)
  for split, n in (('train', 3), ('validation', 2), ('test', 1)):
    records = fx.read_records(builder.split_files(split))
    assert len(records) == n == builder.num_examples(split)
    for r in records:
      assert r['frames'].shape == (24, 16, 24, 3)  # 12 fps x 2 s, short 16.
      np.testing.assert_array_equal(fx.frame_indices(r['frames']),
                                    np.arange(24))
      if split == 'test':
        assert (r['label'], r['text']) == (-1, '')
      else:
        # Brackets stripped, looked up in labels.json's ids.
        assert r['label'] == int(LABELS[r['text']])
        assert '[' not in r['text']
  val = fx.read_records(builder.split_files('validation'))
  expected = {'11.webm': T[3], '12.webm': T[0]}
  for r in val:
    name = os.path.basename(r['filename'])
    assert r['text'] == expected[name].replace('[', '').replace(']', '')


def test_manifest(prepared):
  _, rows = prepared
  by_key = {(r['split'], r['key']): r for r in rows}
  assert by_key[('train', '4')]['status'] == 'missing'
  assert sum(r['status'] == 'ok' for r in rows) == 6
  assert {r['split'] for r in rows} == {'train', 'validation', 'test'}


@pytest.mark.parametrize('case', ['unknown_template', 'no_labels_file'])
def test_bad_annotations(tmp_path, case):
  root = str(tmp_path / 's')
  if case == 'unknown_template':
    _make_ssv2(root, validation=[_entry(11, 'Juggling [something]')])
    match = (r'something-something-v2-validation.json \(id 11\): label '
             r'.Juggling something. is not in the label map')
  else:
    _make_ssv2(root)
    os.remove(os.path.join(root, 'labels',
                           'something-something-v2-labels.json'))
    match = ('annotation file something-something-v2-labels.json or '
             'labels.json not found')
  builder = prepare.make_builder('ssv2', data_dir=str(tmp_path / 'd'),
                                 workers=1, progress=False)
  with pytest.raises(VidjaxError, match=match):
    prepare.prepare(builder, manual_dir=root)


def test_summary_notes_a_class_count_other_than_the_official(prepared):
  builder, _ = prepared
  assert len(builder.notes) == 1
  assert builder.notes[0].endswith(
      'something-something-v2-labels.json has 4 classes; the official ssv2 '
      'has 174')


@pytest.mark.parametrize('case', ['repeated_label_key', 'template_not_text',
                                  'listed_twice', 'in_two_splits'])
def test_malformed_annotations_stop_before_converting(tmp_path, case):
  root = str(tmp_path / 's')
  labels_dir = os.path.join(root, 'labels')
  val_json = os.path.join(labels_dir,
                          'something-something-v2-validation.json')
  labels_json = os.path.join(labels_dir, 'something-something-v2-labels.json')
  if case == 'repeated_label_key':
    _make_ssv2(root)
    # json.load would keep the second id silently.
    with open(labels_json, 'w') as f:
      f.write('{"%s": "0",\n "%s": "1"}' % (T[0], T[0]))
    message = (f'{labels_json}: key {T[0]!r} appears twice in one object; '
               'json would keep only the last')
  elif case == 'template_not_text':
    _make_ssv2(root, validation=[_entry(11, T[3]), _entry(12, ['x']),
                                 _entry(13, None)])
    message = (f'{val_json} (id 12): "template" [\'x\'] is not a class name '
               '(and 1 more bad entry: id 13)')
  elif case == 'listed_twice':
    _make_ssv2(root, validation=[_entry(11, T[3]), _entry(11, T[0])])
    message = (f"{val_json} (id 11): video 11 is listed again, as "
               f"{T[0].replace('[', '').replace(']', '')!r}; entry 0 lists "
               f"it as {T[3].replace('[', '').replace(']', '')!r}")
  else:
    _make_ssv2(root, validation=[_entry(11, T[3]), _entry(2, T[2])])
    name = T[2].replace('[', '').replace(']', '')
    message = (f'ssv2: video 2 is in train as {name!r} and in validation as '
               f'{name!r}; the official lists do not overlap and validation '
               'must be held out: keep each video in one split')
  builder = prepare.make_builder('ssv2', data_dir=str(tmp_path / 'd'),
                                 workers=1, progress=False)
  with pytest.raises(VidjaxError) as e:
    prepare.prepare(builder, manual_dir=root)
  assert str(e.value) == message
  assert not builder.is_prepared()
