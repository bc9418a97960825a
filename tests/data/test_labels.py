"""Class-name normalisation and label maps."""

import random

import pytest

from vidjax.data import labels
from vidjax.errors import VidjaxError

KINETICS = [
    'passing American football (in game)',
    'passing American football (not in game)',
    "massaging person's head",
    'tying knot (not on a tie)',
    'abseiling',
]


def test_clean_name_keeps_punctuation_strips_quotes_and_space():
  assert labels.clean_name('  "tying knot (not on a tie)" ') == (
      'tying knot (not on a tie)')
  assert labels.clean_name("massaging  person's\thead") == (
      "massaging person's head")
  assert labels.clean_name('\'"abseiling"\'') == 'abseiling'


def test_lookup_key_equates_spelling_variants():
  variants = ['Passing American football (in game)',
              'passing_American_football_(in_game)',
              '"passing American football (in game)"']
  keys = {labels.lookup_key(v) for v in variants}
  assert len(keys) == 1
  assert labels.lookup_key('massaging persons head') == labels.lookup_key(
      "massaging person's head")
  assert labels.lookup_key('a (b)') != labels.lookup_key('a b')


def test_ssv2_template_brackets_are_stripped():
  assert labels.ssv2_class_name(
      'Putting [something] into [something]') == (
          'Putting something into something')
  assert labels.ssv2_class_name('Twisting (wringing) [something] wet') == (
      'Twisting (wringing) something wet')


def test_map_is_sorted_and_independent_of_order_and_repeats():
  names = KINETICS * 3 + ['"abseiling"', 'zumba']
  maps = []
  for seed in range(5):
    shuffled = list(names)
    random.Random(seed).shuffle(shuffled)
    maps.append(labels.LabelMap.from_names(shuffled, 'train.csv').names)
  assert all(m == maps[0] for m in maps)
  assert list(maps[0]) == sorted(set(KINETICS) | {'zumba'})


def test_index_and_unknown_label_error_names_the_file():
  m = labels.LabelMap.from_names(KINETICS, 'k/train.csv')
  assert m.index('Abseiling') == m.names.index('abseiling')
  assert m.index('tying_knot_(not_on_a_tie)') == m.names.index(
      'tying knot (not on a tie)')
  assert 'zumba' not in m
  with pytest.raises(VidjaxError, match=r'k/validate.csv:7: label .zumba. is '
                     r'not in the label map \(5 classes from k/train.csv\)'):
    m.index('zumba', where='k/validate.csv:7')


def test_colliding_names_are_an_error():
  with pytest.raises(VidjaxError, match='same class'):
    labels.LabelMap(['a b', 'A_B'], 'x.json')


def test_indexed_map_uses_given_ids_and_checks_them():
  m = labels.LabelMap.from_indexed({'b thing': '0', 'a thing': '1'}, 'l.json')
  assert m.names == ('b thing', 'a thing')
  with pytest.raises(VidjaxError, match='0..1'):
    labels.LabelMap.from_indexed({'a': '0', 'b': '2'}, 'l.json')
  with pytest.raises(VidjaxError, match='integers'):
    labels.LabelMap.from_indexed({'a': 'zero'}, 'l.json')
