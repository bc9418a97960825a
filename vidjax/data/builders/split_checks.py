"""Each video once: no repeats within a split, no video in two splits.

A video listed twice in one annotation file is an error naming both lines
(with both labels when they differ): the file was concatenated or edited by
hand, and which label is right is the user's call.

A video in two splits is an error too, with the same label or not. The
official Kinetics and Something-Something lists do not overlap, and users of
MMAction2 or PySlowFast take validation accuracy to be measured on held-out
videos; a video in both is a user's mistake (a list concatenated twice, a
custom split cut wrongly) that would inflate the validation score silently
(same label) or train on a contradiction (different labels). A warning would
be lost in a long conversion's log, so preparation stops before converting
anything, naming the first overlaps (different labels first) and the count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vidjax.data import video_worker
from vidjax.errors import VidjaxError

# How many overlapping videos an error names.
_NAMED = 3


def _label(task: video_worker.VideoTask) -> str:
  return repr(task.label_text) if task.label_text else 'unlabelled'


class FirstSeen:
  """Where each key of one split was first listed, to report repeats."""

  def __init__(self):
    self._seen: dict[str, tuple[str, str]] = {}

  def repeat(self, key: str, where: str, label_text: str) -> str | None:
    """None the first time `key` is seen; else what is wrong (for Problems).

    Args:
      key: the video's key in its split.
      where: this listing's place as an error shows it ('line 7').
      label_text: its class name ('' when unlabelled).
    """
    if key not in self._seen:
      self._seen[key] = (where, label_text)
      return None
    first_where, first_label = self._seen[key]
    if first_label != label_text:
      return (f'video {key} is listed again, as {label_text!r}; {first_where} '
              f'lists it as {first_label!r}')
    return f'video {key} is listed again ({first_where} lists it already)'


def check_disjoint(name: str,
                   tasks: Mapping[str, Sequence[video_worker.VideoTask]]):
  """Raises VidjaxError when a video (key) is in more than one split."""
  first: dict[str, tuple[str, video_worker.VideoTask]] = {}
  overlaps = []
  for split, split_tasks in tasks.items():
    for task in split_tasks:
      if task.key not in first:
        first[task.key] = (split, task)
      elif first[task.key][0] != split:
        overlaps.append((first[task.key], (split, task)))
  if not overlaps:
    return

  def conflict(overlap) -> bool:
    # Two labels that disagree; an unlabelled (test) listing has none.
    a, b = overlap[0][1].label_text, overlap[1][1].label_text
    return bool(a and b and a != b)

  overlaps.sort(key=lambda o: not conflict(o))  # Stable: conflicts first.
  differ = sum(map(conflict, overlaps))
  (split_a, a), (split_b, b) = overlaps[0]
  text = (f'{name}: video {a.key} is in {split_a} as {_label(a)} and in '
          f'{split_b} as {_label(b)}')
  if len(overlaps) > 1:
    keys = ', '.join(o[0][1].key for o in overlaps[1:1 + _NAMED])
    etc = ', ...' if len(overlaps) > 1 + _NAMED else ''
    text += f'; {len(overlaps) - 1} more video(s) in two splits: {keys}{etc}'
  if differ:
    text += f' ({differ} with different labels)'
  raise VidjaxError(
      text + '; the official lists do not overlap and validation must be '
      'held out: keep each video in one split')
