"""Class names and label maps, built only from annotation files.

One place decides how a class name is written and how it is matched:

* `clean_name` is the display form stored in records (`clip/label/text`) and
  in `label.labels.txt`: Unicode NFC, surrounding quotes removed (CSV exports
  of Kinetics sometimes keep them), runs of whitespace collapsed. Internal
  parentheses and apostrophes stay: "passing American football (in game)",
  "massaging person's head".
* `lookup_key` is what two names must share to be the same class: the clean
  name case-folded, with '_' read as a space (folder-name variants of
  Kinetics classes) and quote characters dropped.
* `ssv2_class_name` turns an SSv2 template ("Putting [something] on a
  surface") into its class name ("Putting something on a surface").

A `LabelMap` is built from the annotation files of a dataset, never from the
videos that happened to decode, so that a missing or broken video cannot shift
class ids; every split of a dataset is labelled with the same map. Ids are the
positions in the sorted list of clean names (Python string order), unless a
dataset ships official ids (SSv2's labels file), which are used as given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import os
import re
import unicodedata

from vidjax.errors import VidjaxError

_QUOTES = '"\'`\u2018\u2019\u201c\u201d'


def clean_name(name: str) -> str:
  """Display form of a class name (see the module docstring)."""
  text = unicodedata.normalize('NFC', str(name))
  text = ' '.join(text.split())
  # Strip one pair of matching surrounding quotes, repeatedly ('"x"' → x).
  while len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
    text = ' '.join(text[1:-1].split())
  return text


def lookup_key(name: str) -> str:
  """Matching key: names with equal keys denote the same class."""
  text = clean_name(name).casefold().replace('_', ' ')
  text = ''.join(c for c in text if c not in _QUOTES)
  return ' '.join(text.split())


def ssv2_class_name(template: str) -> str:
  """An SSv2 template with its placeholder brackets removed."""
  return clean_name(re.sub(r'[\[\]]', '', template))


class LabelMap:
  """An ordered, fixed class list with tolerant name lookup.

  Attributes:
    names: clean class names; `names[i]` is class id i.
    source: the annotation file(s) the map came from, for error messages.
  """

  def __init__(self, names: Iterable[str], source: str):
    self.names = tuple(names)
    self.source = source
    self._index: dict[str, int] = {}
    for i, name in enumerate(self.names):
      key = lookup_key(name)
      if not key:
        raise VidjaxError(f'{source}: empty class name')
      if key in self._index:
        other = self.names[self._index[key]]
        raise VidjaxError(
            f'{source}: class names {other!r} and {name!r} are the same '
            'class after normalisation'
        )
      self._index[key] = i

  @classmethod
  def from_names(cls, names: Iterable[str], source: str) -> 'LabelMap':
    """Sorted map of the distinct (normalised) names."""
    by_key: dict[str, str] = {}
    for name in names:
      clean = clean_name(name)
      if not clean:
        raise VidjaxError(f'{source}: empty class name')
      # Spelling variants of one class collapse to one entry; the smallest
      # spelling wins so the choice does not depend on file order.
      key = lookup_key(clean)
      by_key[key] = min(by_key.get(key, clean), clean)
    if not by_key:
      raise VidjaxError(f'{source}: no class names found')
    return cls(sorted(by_key.values()), source)

  @classmethod
  def from_indexed(cls, mapping: Mapping[str, int | str], source: str
                   ) -> 'LabelMap':
    """Map with given ids ({name: id}); ids must be exactly 0..N-1."""
    try:
      items = [(int(i), clean_name(n)) for n, i in mapping.items()]
    except (TypeError, ValueError) as e:
      raise VidjaxError(f'{source}: class ids must be integers ({e})') from e
    ids = sorted(i for i, _ in items)
    if ids != list(range(len(items))):
      raise VidjaxError(
          f'{source}: class ids must be 0..{len(items) - 1} without gaps or '
          'repeats'
      )
    if not items:
      raise VidjaxError(f'{source}: no classes')
    return cls([n for _, n in sorted(items)], source)

  def __len__(self) -> int:
    return len(self.names)

  def __contains__(self, name: str) -> bool:
    return lookup_key(name) in self._index

  def index(self, name: str, where: str | os.PathLike = '') -> int:
    """Class id of `name`.

    Args:
      name: a class name in any spelling `lookup_key` equates.
      where: the file (and line) the name comes from, for the error.

    Raises:
      VidjaxError: naming `where`, when `name` is not a class of the map.
    """
    i = self._index.get(lookup_key(name))
    if i is None:
      place = f'{os.fspath(where)}: ' if where else ''
      raise VidjaxError(
          f'{place}label {clean_name(name)!r} is not in the label map '
          f'({len(self.names)} classes from {self.source})'
      )
    return i
