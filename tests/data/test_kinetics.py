"""Kinetics builders end to end on a tiny local copy in the official layout."""

import csv
import os

import numpy as np
import pytest

from tests.data import raw_video_fixtures as fx
from vidjax.data import builders
from vidjax.data import prepare
from vidjax.data.builders import kinetics
from vidjax.errors import VidjaxError

C = fx.KINETICS_CLASSES
FPS, SHORT = 10, 16
# (label, youtube id, start, end, container or None (missing) or 'truncated').
TRAIN = [
    (C[0], 'aaaaaaaaa01', 10, 12, 'mp4'),
    (C[1], 'bbbbbbbbb02', 0, 2, 'webm'),
    (C[2], 'ccccccccc03', 31, 33, 'mp4'),
    (C[3], 'ddddddddd04', 5, 7, None),
    (C[4], 'eeeeeeeee05', 7, 9, 'truncated'),
    (C[5], 'fffffffff06', 1, 3, 'untrimmed'),
]
VALIDATION = [
    (C[5], 'ggggggggg07', 3, 5, 'webm'),
    (C[0], 'hhhhhhhhh08', 0, 2, 'mp4'),
]


def _make_kinetics(root, train=TRAIN, validation=VALIDATION):
  for split, rows in (('train', train), ('val', validation)):
    for label, yid, start, end, kind in rows:
      name = kinetics.clip_name(yid, start, end)
      # CVDF-style per-class folders for train, flat for val.
      folder = os.path.join(root, split, label) if split == 'train' else (
          os.path.join(root, split))
      if kind in ('mp4', 'truncated'):
        fx.write_video(os.path.join(folder, name + '.mp4'), 48, 24)
        if kind == 'truncated':
          fx.truncate(os.path.join(folder, name + '.mp4'))
      elif kind == 'webm':
        fx.write_video(os.path.join(folder, name + '.webm'), 24, 12)
      elif kind == 'untrimmed':
        # 4 s at 12 fps; the CSV's [1, 3) is cut out of it.
        fx.write_video(os.path.join(root, 'youtube', yid + '.mp4'), 48, 12)
  fx.write_kinetics_csv(os.path.join(root, 'kinetics400', 'train.csv'),
                        [r[:4] + ('train',) for r in train])
  fx.write_kinetics_csv(os.path.join(root, 'kinetics400', 'validate.csv'),
                        [r[:4] + ('validate',) for r in validation])
  fx.write_kinetics_csv(os.path.join(root, 'kinetics400', 'test.csv'),
                        [('', 'tttttttttt9', 0, 10, 'test')], labelled=False)


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('k400'))
  _make_kinetics(root)
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  builder = prepare.make_builder('kinetics400', data_dir=data_dir, workers=1,
                                 fps=FPS, short_side=SHORT, videos_per_shard=2,
                                 progress=False)
  rows = prepare.prepare(builder, manual_dir=root)
  return builder, rows, root


def _nearest(times, src_fps, num_src):
  src = np.arange(num_src) / src_fps
  return np.array([np.argmin(np.abs(src - t)) for t in times])


def test_config_name_and_registry(prepared):
  builder, _, _ = prepared
  assert builder.builder_config.name == 'fps10_short16_q90'
  again = builders.get_builder('kinetics400/fps10_short16_q90',
                               builder.data_dir_root)
  assert again.is_prepared()
  assert again.class_names == tuple(sorted(C))
  for name in ('kinetics400', 'kinetics600', 'kinetics700', 'ssv2'):
    assert name in builders.BUILDERS


def test_records_end_to_end(prepared):
  builder, _, _ = prepared
  names = sorted(C)
  by_split = {s: fx.read_records(builder.split_files(s))
              for s in ('train', 'validation')}
  assert builder.split_names == ('train', 'validation')  # No test videos.
  assert [len(v) for v in by_split.values()] == [4, 2]
  assert builder.num_examples('train') == 4
  for split, records in by_split.items():
    for r in records:
      # fps x duration frames (2 s clips), short side resized (32x48 source).
      assert r['frames'].shape == (FPS * 2, SHORT, SHORT * 3 // 2, 3)
      assert r['text'] in C and r['label'] == names.index(r['text'])
  train = {os.path.basename(r['filename']): r for r in by_split['train']}
  assert set(train) == {'aaaaaaaaa01_000010_000012.mp4',
                        'bbbbbbbbb02_000000_000002.webm',
                        'ccccccccc03_000031_000033.mp4', 'fffffffff06.mp4'}
  r = train['aaaaaaaaa01_000010_000012.mp4']
  assert r['filename'] == os.path.join('train', C[0],
                                       'aaaaaaaaa01_000010_000012.mp4')
  np.testing.assert_array_equal(fx.frame_indices(r['frames']),
                                _nearest(np.arange(20) / FPS, 24, 48))
  assert (r['start_us'], r['end_us']) == (10_000_000, 12_000_000)
  # The untrimmed video is cut at the CSV's [1 s, 3 s).
  r = train['fffffffff06.mp4']
  np.testing.assert_array_equal(fx.frame_indices(r['frames']),
                                _nearest(1 + np.arange(20) / FPS, 12, 48))
  assert (r['start_us'], r['end_us']) == (1_000_000, 3_000_000)
  assert r['text'] == C[5]


def test_label_map_is_the_sorted_train_classes_in_every_split(prepared):
  builder, _, _ = prepared
  text = (builder.data_path / 'label.labels.txt').read_text().splitlines()
  assert text == sorted(C)
  val = fx.read_records(builder.split_files('validation'))
  assert {(r['text'], r['label']) for r in val} == {
      (C[5], sorted(C).index(C[5])), (C[0], sorted(C).index(C[0]))}


def test_manifest_records_every_video(prepared):
  builder, rows, _ = prepared
  with open(builder.manifest_path, newline='') as f:
    on_disk = list(csv.DictReader(f))
  assert on_disk == rows
  status = {r['key']: r for r in rows}
  assert len(rows) == len(TRAIN) + len(VALIDATION) + 1
  for label, yid, start, end, kind in TRAIN + VALIDATION:
    r = status[kinetics.clip_name(yid, start, end)]
    expected = {None: 'missing', 'truncated': 'undecodable'}.get(kind, 'ok')
    assert r['status'] == expected, r
    if expected == 'ok':
      assert (int(r['num_frames']), float(r['duration_s'])) == (20, 2.0)
    else:
      assert r['reason'] and r['num_frames'] == '0'
  assert 'truncated' in status['eeeeeeeee05_000007_000009']['reason']
  assert status['ddddddddd04_000005_000007']['reason'] == 'file not found'
  test_row = status['tttttttttt9_000000_000010']
  assert (test_row['split'], test_row['status'], test_row['label']) == (
      'test', 'missing', '-1')


@pytest.mark.parametrize('case', ['unknown_label', 'no_validate', 'empty',
                                  'no_videos', 'bad_time'])
def test_bad_annotations_are_one_clear_error(tmp_path, case):
  root = tmp_path / 'k'
  root.mkdir()
  if case == 'unknown_label':
    train = [(C[0], 'aaaaaaaaa01', 0, 2, 'mp4')]
    _make_kinetics(str(root), train=train,
                   validation=[('juggling (fire)', 'zzz', 0, 2, None)])
    match = r'validate\.csv:2: label .juggling \(fire\). is not in the label'
  elif case == 'no_validate':
    _make_kinetics(str(root), train=TRAIN[:1], validation=[])
    os.remove(root / 'kinetics400' / 'validate.csv')
    match = 'annotation file validate.csv or val.csv not found under'
  elif case == 'empty':
    match = 'manual_dir .* is empty'
  elif case == 'no_videos':
    fx.write_kinetics_csv(str(root / 'train.csv'), [(C[0], 'x', 0, 2, 'train')])
    fx.write_kinetics_csv(str(root / 'val.csv'), [(C[0], 'y', 0, 2, 'val')])
    match = 'no kinetics400 videos found under .*x_000000_000002.mp4'
  else:
    fx.write_kinetics_csv(str(root / 'train.csv'),
                          [(C[0], 'x', 'soon', 2, 'train')])
    fx.write_kinetics_csv(str(root / 'val.csv'), [])
    match = r'train\.csv:2: bad time_start .soon.'
  builder = prepare.make_builder('kinetics400', data_dir=str(tmp_path / 'd'),
                                 workers=1, progress=False)
  with pytest.raises(VidjaxError, match=match):
    prepare.prepare(builder, manual_dir=str(root))


def test_summary_notes_a_class_count_other_than_the_official(prepared):
  builder, rows, root = prepared
  # Logged warnings are hidden in the command line; the summary shows it.
  train_csv = os.path.join(root, 'kinetics400', 'train.csv')
  assert builder.notes == [f'{train_csv} has 6 classes; the official '
                           'kinetics400 has 400']
  assert f'  note: {builder.notes[0]}' in prepare.summary_lines(builder, rows)


_VAL = 'label,youtube_id,time_start,time_end,split\nzumba,v1,0,2,val\n'
_TRAIN = ('label,youtube_id,time_start,time_end,split\nabseiling,t1,0,2,train\n'
          'zumba,t2,0,2,train\n')


@pytest.mark.parametrize('case', [
    'stray_quote', 'empty_validation_label', 'validation_without_labels',
    'listed_twice', 'infinite_time', 'negative_time', 'in_two_splits',
    'two_validation_files'])
def test_malformed_annotations_stop_before_converting(tmp_path, case):
  root = tmp_path / 'k'
  root.mkdir()
  train, val, val_name = _TRAIN, _VAL, 'validate.csv'
  train_csv, val_csv = str(root / 'train.csv'), str(root / val_name)
  if case == 'stray_quote':
    # The case: three videos vanished into one class named
    # 'juggling,vid…,yoga' and the run exited 0.
    train = '\n'.join([
        'label,youtube_id,time_start,time_end,split',
        '"juggling,vid1,0,2,train', 'yoga,vid2,0,2,train',
        'yoga,vid3,0,2,train', 'yoga",vid4,0,2,train', 'zumba,vid5,0,2,train'])
    for i in range(1, 6):
      fx.write_video(str(root / f'vid{i}_000000_000002.mp4'), 4, 2)
    message = (f'{train_csv}:2: cannot parse (unexpected end of data; a stray '
               'quote?) (and 1 more bad line: 5)')
  elif case == 'empty_validation_label':
    val += ',v2,0,2,val\n'
    message = f'{val_csv}:3: empty label'
  elif case == 'validation_without_labels':
    val = 'youtube_id,time_start,time_end,split\nv1,0,2,val\n'
    message = (f'{val_csv}:1: the header has no column(s) label (header: '
               'youtube_id,time_start,time_end,split); expected label,'
               'youtube_id,time_start,time_end,split')
  elif case == 'listed_twice':
    train += 'zumba,t1,0,2,train\nabseiling,t1,0,2,train\n'
    message = (f"{train_csv}:4: video t1_000000_000002 is listed again, as "
               "'zumba'; line 2 lists it as 'abseiling' (and 1 more bad "
               'line: 5)')
  elif case == 'infinite_time':
    train += 'zumba,t3,0,inf,train\n'
    message = f"{train_csv}:4: bad time_end 'inf'"
  elif case == 'negative_time':
    train += 'zumba,t3,-5,2,train\n'
    message = f"{train_csv}:4: bad time_start '-5'"
  elif case == 'in_two_splits':
    val += 'abseiling,t2,0,2,val\n'
    message = ("kinetics400: video t2_000000_000002 is in train as 'zumba' "
               "and in validation as 'abseiling' (1 with different labels); "
               'the official lists do not overlap and validation must be '
               'held out: keep each video in one split')
  else:
    os.mkdir(root / 'cvdf')
    (root / 'cvdf' / 'val.csv').write_text(_VAL)
    message = (f'kinetics400: several validation annotation files under '
               f'{root}: {val_csv}, {root / "cvdf" / "val.csv"}; keep one '
               'dataset version per manual_dir')
  (root / 'train.csv').write_text(train)
  (root / val_name).write_text(val)
  data_dir = tmp_path / 'd'
  builder = prepare.make_builder('kinetics400', data_dir=str(data_dir),
                                 workers=1, progress=False)
  with pytest.raises(VidjaxError) as e:
    prepare.prepare(builder, manual_dir=str(root))
  assert str(e.value) == message
  # Stopped before converting: no dataset, no work directory.
  assert not builder.is_prepared()
  assert not os.path.exists(data_dir / 'downloads' / 'vidjax_prepare')
