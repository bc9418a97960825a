"""Annotation files read strictly: one data line is one row, or an error.

A forgiving CSV reader turns a stray quote into a field that runs on over
the following lines, swallowing them: videos vanish and a class is named
after three rows (`juggling,vid…,yoga`), and nothing says so. Here every
physical line of a CSV is parsed on its own (`csv` in strict mode), so a
quote can never reach past its line, and the rows read always equal the
file's non-blank data lines. What is checked:

* the file: readable, UTF-8 (a BOM and CRLF/CR line ends are fine), a header
  with the required columns, no empty or repeated column name;
* each line: as many fields as the header, quotes closed on the line, and
  no field holding the delimiter, an unbalanced '"' or a control character
  (each is what a stray or missing quote leaves behind; no official class
  name or id contains one).

Problems are collected per file and raised as one `VidjaxError`: the first
as `<file>:<line>: <what>`, then how many more lines are bad and where, so a
damaged file is fixed in one pass, not one line per run. JSON files are
parsed with repeated keys refused (json keeps the last one silently).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from collections.abc import Sequence
from typing import Any

from vidjax.errors import VidjaxError

# How many further bad lines an error lists.
_LISTED = 5
_PLURAL = {'line': 'lines', 'entry': 'entries'}
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')
_LINE_END = re.compile(r'\r\n|\r|\n')


class Problems:
  """Bad lines (or entries) of one file, raised together as one error.

  A place is a line number (`file:7: ...`) or a text such as 'id 11' for
  JSON entries (`file (id 11): ...`).
  """

  def __init__(self, path: str, unit: str = 'line'):
    self.path = path
    self.unit = unit
    self.items: list[tuple[int | str, str]] = []

  def add(self, place: int | str, message: str):
    self.items.append((place, message))

  def raise_if_any(self):
    if not self.items:
      return
    place, message = self.items[0]
    at = (f'{self.path}:{place}' if isinstance(place, int)
          else f'{self.path} ({place})')
    text = f'{at}: {message}'
    more = self.items[1:]
    if more:
      where = ', '.join(str(p) for p, _ in more[:_LISTED])
      etc = ', ...' if len(more) > _LISTED else ''
      unit = self.unit if len(more) == 1 else _PLURAL[self.unit]
      text += f' (and {len(more)} more bad {unit}: {where}{etc})'
    raise VidjaxError(text)


def read_text(path: str) -> str:
  """The file's text (UTF-8, an optional BOM dropped).

  Raises:
    VidjaxError: unreadable, or not UTF-8 (naming the line of the first bad
      byte).
  """
  try:
    with open(path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise VidjaxError(f'{path}: cannot read: {e.strerror or e}') from e
  try:
    return data.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    line = data[:e.start].count(b'\n') + 1
    raise VidjaxError(
        f'{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save '
        'the file as UTF-8') from e


def _field_problem(value: str, delimiter: str) -> str | None:
  if delimiter in value:
    return f'contains the delimiter {delimiter!r} (a stray quote?)'
  if value.count('"') % 2:
    return 'has an unbalanced \'"\' (a stray quote?)'
  if _CONTROL.search(value):
    return 'contains a control character'
  return None


@dataclasses.dataclass(frozen=True)
class CsvTable:
  """A strictly read CSV: its header and (line number, row) per data line."""

  path: str
  columns: tuple[str, ...]
  # One per non-blank line after the header: a line that is not a row is
  # an error, never skipped.
  rows: tuple[tuple[int, dict[str, str]], ...]


def read_csv(path: str, required: Sequence[str], expected_header: str,
             delimiter: str = ',') -> CsvTable:
  """Reads `path` strictly (see the module docstring).

  Args:
    path: the CSV file.
    required: columns the header must have (others are kept).
    expected_header: shown when the header is wrong.
    delimiter: the field separator.

  Raises:
    VidjaxError: naming the file and line of the first problem.
  """
  lines = _LINE_END.split(read_text(path))
  numbered = [(i + 1, l) for i, l in enumerate(lines) if l.strip()]
  if not numbered:
    raise VidjaxError(f'{path}: empty file; expected a header '
                      f'{expected_header} and one line per video')
  problems = Problems(path)
  header_line, header_text = numbered[0]
  try:
    (header,) = csv.reader([header_text], delimiter=delimiter, strict=True)
  except csv.Error as e:
    raise VidjaxError(f'{path}:{header_line}: bad header: {e}') from e
  columns = tuple(c.strip() for c in header)
  missing = [c for c in required if c not in columns]
  repeated = sorted({c for c in columns if columns.count(c) > 1})
  if missing or repeated or '' in columns:
    what = (f'no column(s) {", ".join(missing)}' if missing else
            f'repeated column(s) {", ".join(repeated)}' if repeated else
            'an empty column name')
    raise VidjaxError(
        f'{path}:{header_line}: the header has {what} (header: '
        f'{header_text.strip()}); expected {expected_header}')
  rows = []
  for line, text in numbered[1:]:
    try:
      # Without a quote a line is its fields (as csv would read it, 10x
      # faster: 650k Kinetics lines).
      fields = (text.split(delimiter) if '"' not in text else
                next(csv.reader([text], delimiter=delimiter, strict=True)))
    except csv.Error as e:
      problems.add(line, f'cannot parse ({e}; a stray quote?)')
      continue
    if len(fields) != len(columns):
      problems.add(line, f'{len(fields)} fields, the header has '
                   f'{len(columns)} ({",".join(columns)})')
      continue
    # Only a quoted line can hold the delimiter or a quote in a field.
    if '"' in text or _CONTROL.search(text):
      bad = next(((c, p) for c, v in zip(columns, fields)
                  if (p := _field_problem(v, delimiter))), None)
      if bad:
        problems.add(line, f'field {bad[0]} {bad[1]}')
        continue
    rows.append((line, dict(zip(columns, fields))))
  problems.raise_if_any()
  return CsvTable(path, columns, tuple(rows))


class _RepeatedKey(ValueError):
  pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
  out = {}
  for key, value in pairs:
    if key in out:
      raise _RepeatedKey(key)
    out[key] = value
  return out


def load_json(path: str) -> Any:
  """The JSON value in `path`; a key repeated within an object is an error.

  Raises:
    VidjaxError: unreadable, not UTF-8, not JSON (naming the line), or a
      repeated key.
  """
  text = read_text(path)
  try:
    return json.loads(text, object_pairs_hook=_no_repeated_keys)
  except json.JSONDecodeError as e:
    raise VidjaxError(f'{path}:{e.lineno}: not valid JSON: {e.msg} (column '
                      f'{e.colno})') from e
  except _RepeatedKey as e:
    raise VidjaxError(f'{path}: key {e.args[0]!r} appears twice in one '
                      'object; json would keep only the last') from e
