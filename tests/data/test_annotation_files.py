"""Strict annotation files: every data line is one row or an error naming it;
no video twice in a split or in two splits."""

import os
import re

import pytest

from vidjax.data.builders import annotation_files
from vidjax.data.builders import raw_video
from vidjax.data.builders import split_checks
from vidjax.errors import VidjaxError

HEADER = 'label,youtube_id,time_start,time_end,split'
REQUIRED = ('label', 'youtube_id', 'time_start', 'time_end')


def _write(tmp_path, text, name='train.csv', mode='w'):
  path = str(tmp_path / name)
  with open(path, mode, **({} if 'b' in mode else dict(newline=''))) as f:
    f.write(text)
  return path


def _read(path):
  return annotation_files.read_csv(path, REQUIRED, HEADER)


def test_stray_quote_is_an_error_not_swallowed_rows(tmp_path):
  # The case: an opening quote ran on to the quote three lines
  # later, so vid1..vid3 vanished and a class was 'juggling,vid1,...,zumba'.
  path = _write(tmp_path, '\n'.join([
      HEADER, '"juggling,vid1,0,1,train', 'yoga,vid2,0,1,train',
      'yoga,vid3,0,1,train', 'zumba",vid4,0,1,train', 'zumba,vid5,0,1,train',
  ]) + '\n')
  with pytest.raises(VidjaxError) as e:
    _read(path)
  assert str(e.value) == (
      f'{path}:2: cannot parse (unexpected end of data; a stray quote?) '
      '(and 1 more bad line: 5)')


def test_rows_equal_data_lines_with_bom_crlf_quotes_and_blank_lines(tmp_path):
  lines = [HEADER, '"dancing ""ballet"" style",a1,0,10,train', '',
           'zumba,a2,3,13,train', '   ', '"abseiling",a3,5,15,train',
           'zumba,a4,1,2,train']
  path = _write(tmp_path, ('\ufeff' + '\r\n'.join(lines) + '\r\n').encode(),
                mode='wb')
  table = _read(path)
  with open(path, encoding='utf-8-sig') as f:
    data_lines = sum(1 for l in f if l.strip()) - 1  # Minus the header.
  assert len(table.rows) == data_lines == 4
  assert table.columns == tuple(HEADER.split(','))
  assert [(line, row['label'], row['youtube_id']) for line, row in
          table.rows] == [(2, 'dancing "ballet" style', 'a1'),
                          (4, 'zumba', 'a2'), (6, 'abseiling', 'a3'),
                          (7, 'zumba', 'a4')]


@pytest.mark.parametrize('line,problem', [
    ('zumba,a1,0,10', '4 fields, the header has 5 ({})'.format(HEADER)),
    ('zumba,a1,0,10,train,extra', '6 fields, the header has 5 ({})'.format(
        HEADER)),
    ('"juggling, yoga",a1,0,10,train',
     "field label contains the delimiter ',' (a stray quote?)"),
    ('zumba,a1",0,10,train',
     'field youtube_id has an unbalanced \'"\' (a stray quote?)'),
    ('"zumba"x,a1,0,10,train', 'cannot parse (\',\' expected after \'"\'; a '
     'stray quote?)'),
    ('zumba,a\x001,0,10,train', 'field youtube_id contains a control '
     'character'),
])
def test_a_bad_line_is_named(tmp_path, line, problem):
  path = _write(tmp_path, f'{HEADER}\nabseiling,a0,0,10,train\n{line}\n')
  with pytest.raises(VidjaxError) as e:
    _read(path)
  assert str(e.value) == f'{path}:3: {problem}'


def test_many_bad_lines_are_counted_in_one_error(tmp_path):
  bad = [f'zumba,a{i},0' for i in range(8)]
  path = _write(tmp_path, '\n'.join([HEADER, 'zumba,ok,0,1,train'] + bad))
  with pytest.raises(VidjaxError) as e:
    _read(path)
  assert str(e.value) == (
      f'{path}:3: 3 fields, the header has 5 ({HEADER}) (and 7 more bad '
      'lines: 4, 5, 6, 7, 8, ...)')


@pytest.mark.parametrize('text,problem', [
    ('', ': empty file; expected a header {} and one line per video'),
    ('\n\n', ': empty file; expected a header {} and one line per video'),
    ('abseiling,a0,0,10,train\n', ':1: the header has no column(s) label, '
     'youtube_id, time_start, time_end (header: abseiling,a0,0,10,train); '
     'expected {}'),
    ('label;youtube_id;time_start;time_end\n', ':1: the header has no '
     'column(s) label, youtube_id, time_start, time_end (header: '
     'label;youtube_id;time_start;time_end); expected {}'),
    ('label,youtube_id,time_start,time_end,label\n', ':1: the header has '
     'repeated column(s) label (header: label,youtube_id,time_start,'
     'time_end,label); expected {}'),
    ('label,youtube_id,time_start,time_end,\n', ':1: the header has an '
     'empty column name (header: label,youtube_id,time_start,time_end,); '
     'expected {}'),
])
def test_bad_header(tmp_path, text, problem):
  path = _write(tmp_path, text)
  with pytest.raises(VidjaxError) as e:
    _read(path)
  assert str(e.value) == path + problem.format(HEADER)


def test_unreadable_or_not_utf8(tmp_path):
  path = _write(tmp_path, f'{HEADER}\nzumba,a,0,1,t\nzumba\xe9,b,0,1,t\n'
                .encode('latin-1'), mode='wb')
  with pytest.raises(VidjaxError) as e:
    _read(path)
  assert str(e.value) == (f'{path}:3: not UTF-8 text (byte 0xe9); save the '
                          'file as UTF-8')
  with pytest.raises(VidjaxError) as e:
    _read(str(tmp_path))  # A directory where a file should be.
  assert str(e.value) == f'{tmp_path}: cannot read: Is a directory'


def test_json_strict_but_bom_is_fine(tmp_path):
  path = _write(tmp_path, '\ufeff{"a": "0", "b": "1"}'.encode(), 'l.json',
                'wb')
  assert annotation_files.load_json(path) == {'a': '0', 'b': '1'}
  path = _write(tmp_path, '{"a": "0",\n "a": "1"}', 'l.json')
  with pytest.raises(VidjaxError) as e:
    annotation_files.load_json(path)
  assert str(e.value) == (f"{path}: key 'a' appears twice in one object; json "
                          'would keep only the last')
  path = _write(tmp_path, '[{"id": "1"},\n {"id": "2"}\n {"id": "3"}]',
                'l.json')
  with pytest.raises(VidjaxError) as e:
    annotation_files.load_json(path)
  assert str(e.value) == (f"{path}:3: not valid JSON: Expecting ',' "
                          'delimiter (column 2)')


def _task(key, text):
  return raw_video.VideoTask(key=key, path=None, filename=key,
                             label=0 if text else -1, label_text=text)


def test_video_in_two_splits_is_an_error():
  tasks = {'train': [_task('a', 'yoga'), _task('b', 'zumba'),
                     _task('c', 'yoga')],
           'validation': [_task('b', 'zumba'), _task('d', 'yoga')],
           'test': [_task('a', '')]}
  with pytest.raises(VidjaxError) as e:
    split_checks.check_disjoint('kinetics400', tasks)
  assert str(e.value) == (
      "kinetics400: video b is in train as 'zumba' and in validation as "
      "'zumba'; 1 more video(s) in two splits: a; the official lists do not "
      'overlap and validation must be held out: keep each video in one split')
  tasks['validation'][1] = _task('c', 'zumba')  # Also a different label.
  with pytest.raises(VidjaxError) as e:
    split_checks.check_disjoint('kinetics400', tasks)
  assert str(e.value).startswith(
      "kinetics400: video c is in train as 'yoga' and in validation as "
      "'zumba'; 2 more video(s) in two splits: b, a (1 with different "
      'labels); ')
  del tasks['test']
  tasks['validation'] = [_task('d', 'yoga')]
  split_checks.check_disjoint('kinetics400', tasks)  # Disjoint: no error.


def test_first_seen_names_both_listings():
  seen = split_checks.FirstSeen()
  assert seen.repeat('a', 'line 2', 'yoga') is None
  assert seen.repeat('b', 'line 3', 'yoga') is None
  assert seen.repeat('a', 'line 9', 'yoga') == (
      'video a is listed again (line 2 lists it already)')
  assert seen.repeat('b', 'line 11', 'zumba') == (
      "video b is listed again, as 'zumba'; line 3 lists it as 'yoga'")


def test_an_unlistable_directory_is_an_error(tmp_path, monkeypatch):
  (tmp_path / 'train' / 'locked').mkdir(parents=True)
  (tmp_path / 'train' / 'a.mp4').write_bytes(b'')
  locked = str(tmp_path / 'train' / 'locked')
  real = os.scandir

  def scandir(path='.'):
    if os.fspath(path) == locked:  # As for a directory without read access.
      raise PermissionError(13, 'Permission denied', locked)
    return real(path)

  monkeypatch.setattr(os, 'scandir', scandir)
  with pytest.raises(VidjaxError, match=re.escape(
      f'cannot list {locked}: Permission denied; its files would be taken '
      'for missing')):
    raw_video.scan_videos(str(tmp_path))
