"""The output directory of a conversion, replaced all at once or not at all.

A conversion is written whole into a hidden sibling of the output
(`.NAME.tmp-XXXX`, same filesystem, so renames are atomic) and swapped in
only when every file is on disk: the old output is renamed aside, the new
one renamed in, and only then is the old one deleted. A failure at any point
(a full disk, a read-only or unwritable directory) leaves the old output
exactly as it was and removes the partial one.

Only a directory holding nothing but a conversion's own entries is ever
replaced (and only with `overwrite`): a conversion must never delete files
it did not write.

Other outputs written whole (`python -m vidjax.export`'s SavedModel) use
the same functions with their own `Kind` (entries and name).
"""
from collections.abc import Callable
import contextlib
import dataclasses
import logging as std_logging
import os
import re
import secrets
import shutil
import sys
import time

from absl import logging

from vidjax.errors import VidjaxError

# A conversion's entries below its output directory (see `convert`):
# DIR/variables (orbax) and DIR/vidjax_model.json.
VARIABLES_DIR = 'variables'
METADATA_FILE = 'vidjax_model.json'
ENTRIES = frozenset({VARIABLES_DIR, METADATA_FILE})


@dataclasses.dataclass(frozen=True)
class Kind:
  """What is written: the entries it may replace, and its name in messages."""
  entries: frozenset[str]
  name: str

  @property
  def a_name(self) -> str:
    return f'{"an" if self.name[0] in "aeiou" else "a"} {self.name}'


CONVERSION = Kind(ENTRIES, 'conversion')
_SETTLE_SECONDS = 5.0  # At most, for in-flight writes to stop (`_remove`).


# tensorstore (under orbax) reports a failed write as a ValueError whose
# text ends in [os_error_code='28'], not as an OSError.
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")


def os_error_text(error: BaseException) -> str | None:
  """'No space left on device' for an OSError in `error`'s causes, else None.

  orbax and tensorstore wrap a failed write in their own exceptions; the
  errno text is what tells the user why.
  """
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError):
      return error.strerror or str(error)
    code = _TENSORSTORE_ERRNO.search(str(error))
    if code:
      return os.strerror(int(code.group(1)))
    error = error.__cause__ or error.__context__
  return None


@contextlib.contextmanager
def quiet_orbax():
  """orbax's own report of a failed write, which the raised error replaces.

  It logs the failure with tracebacks at ERROR before it raises. And the
  tensorstore writes still in flight when it gives up finish later, into
  the event loop orbax has closed by then: each prints a 'RuntimeError:
  Event loop is closed' traceback as an unraisable exception, while orbax
  raises or after, so that one report is dropped from here on; so is
  asyncio's 'Task exception was never retrieved' for those writes' tasks,
  logged whenever they are garbage-collected (seen once in five runs of
  tests/convert/test_output.py's full-disk command line, under load).
  """
  _drop_closed_loop_reports()
  _drop_unretrieved_task_reports()
  logger = std_logging.getLogger('absl')
  level = logger.level
  logger.setLevel(std_logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


def _drop_closed_loop_reports():
  previous = sys.unraisablehook
  if getattr(previous, 'drops_closed_loop_reports', False):
    return

  def hook(unraisable):
    if not (unraisable.exc_type is RuntimeError and
            str(unraisable.exc_value) == 'Event loop is closed'):
      previous(unraisable)

  hook.drops_closed_loop_reports = True
  sys.unraisablehook = hook


class _UnretrievedTasks(std_logging.Filter):
  """Drops asyncio's reports of task exceptions nobody retrieved."""

  def filter(self, record):
    return not str(record.msg).startswith('Task exception was never '
                                          'retrieved')


def _drop_unretrieved_task_reports():
  logger = std_logging.getLogger('asyncio')
  if not any(isinstance(f, _UnretrievedTasks) for f in logger.filters):
    logger.addFilter(_UnretrievedTasks())


def _entries(directory: str) -> list[str]:
  try:
    return sorted(os.listdir(directory))
  except OSError as e:
    raise VidjaxError(f'cannot read the output directory {directory}: '
                      f'{e.strerror}') from None


def check_output(directory: str, overwrite: bool,
                 kind: Kind = CONVERSION) -> bool:
  """Whether `directory` holds a `kind` to replace; raises if it may not.

  Fine: a path that does not exist, an empty directory, and (with
  `overwrite`) a directory of `kind.entries` only.
  """
  if not os.path.lexists(directory):
    return False
  if os.path.islink(directory):
    # Replacing it would swap the link for a directory, wherever it points.
    raise VidjaxError(f'the output {directory} is a symbolic link; give --out '
                      'the directory it points to')
  if not os.path.isdir(directory):
    raise VidjaxError(f'the output {directory} exists and is not a directory; '
                      'give --out a directory path (it is created)')
  entries = _entries(directory)
  if not entries:
    return False
  others = [e for e in entries if e not in kind.entries]
  if others:
    shown = ', '.join(others[:5]) + (', ...' if len(others) > 5 else '')
    raise VidjaxError(
        f'the output {directory} holds files that are not a vidjax '
        f'{kind.name} ({shown}); {kind.a_name} never deletes what it did not '
        'write: give --out a new or empty directory')
  if not overwrite:
    raise VidjaxError(f'the output {directory} already holds {kind.a_name} '
                      '(pass --overwrite to replace it)')
  return True


def _sibling(directory: str, kind: str) -> str:
  """A new directory `.NAME.KIND-XXXX` beside `directory`, with the mode
  (0777 less the umask) that the output itself would get."""
  parent, name = os.path.split(directory)
  path = os.path.join(parent, f'.{name}.{kind}-{secrets.token_hex(4)}')
  os.mkdir(path, 0o777)
  return path


def _tree_state(path: str) -> list[tuple[str, int]]:
  state = []
  for root, _, names in os.walk(path):
    for name in names:
      with contextlib.suppress(OSError):
        state.append((os.path.join(root, name),
                      os.stat(os.path.join(root, name)).st_size))
  return sorted(state)


def _remove(path: str, what: str):
  """Deletes the tree at `path` once nothing writes to it any more.

  After a failed orbax save, tensorstore writes still in flight go on
  creating files (and their directories) for a moment: removing the tree
  at once would leave it half there.
  """
  deadline = time.monotonic() + _SETTLE_SECONDS
  state = None
  while time.monotonic() < deadline:
    previous, state = state, _tree_state(path)
    if state == previous:
      break
    time.sleep(0.1)
  try:
    shutil.rmtree(path)
  except FileNotFoundError:
    pass
  except OSError as e:
    logging.warning('vidjax: could not remove %s %s: %s; delete it by hand',
                    what, path, e.strerror)


def write_directory(directory: str, write: Callable[[str], None], *,
                    overwrite: bool = False, kind: Kind = CONVERSION) -> str:
  """Runs `write(tmp)` and swaps tmp in as `directory`; returns it.

  Raises VidjaxError (naming `directory` and the errno text) when a write or
  a rename fails for a reason of the environment; `directory` is then as it
  was before. Other exceptions (bugs) propagate after the same clean-up.
  """
  directory = os.path.abspath(directory)
  replace = check_output(directory, overwrite, kind)
  tmp = None
  try:
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    tmp = _sibling(directory, 'tmp')
    write(tmp)
    if replace:
      _swap(tmp, directory, kind)
    else:
      # Onto nothing or an empty directory: rename replaces an empty one.
      os.replace(tmp, directory)
    tmp = None
  except VidjaxError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    text = os_error_text(e)
    if text is None:
      raise
    kept = f'; the {kind.name} there is unchanged' if replace else ''
    raise VidjaxError(f'cannot write {directory}: {text}{kept}') from e
  finally:  # Also on Ctrl-C.
    if tmp is not None:
      _remove(tmp, f'the partial {kind.name}')
  return directory


def _swap(new: str, directory: str, kind: Kind = CONVERSION):
  """Old aside, new in, old deleted; the old one back if the second fails."""
  aside = _sibling(directory, 'old')
  try:
    os.replace(directory, aside)  # Onto the empty directory just made.
  except BaseException:
    with contextlib.suppress(OSError):
      os.rmdir(aside)
    raise
  try:
    os.replace(new, directory)
  except BaseException:
    os.replace(aside, directory)
    raise
  _remove(aside, f'the replaced {kind.name}')


def _inside(path: str, directory: str) -> bool:
  return os.path.commonpath([path, directory]) == directory


def check_paths(source: str, out: str):
  """The output must neither hold nor sit inside the source: replacing it
  would delete the source, and writing into a source directory changes what
  a later conversion of it reads."""
  source = os.path.realpath(os.path.expanduser(source))
  out = os.path.realpath(os.path.expanduser(out))
  if source == out:
    raise VidjaxError(f'--out={out} is the source --torch; write the '
                      'conversion elsewhere')
  if _inside(source, out):
    raise VidjaxError(f'--out={out} holds the source --torch={source}; write '
                      'the conversion elsewhere')
  if os.path.isdir(source) and _inside(out, source):
    raise VidjaxError(f'--out={out} is inside the source directory '
                      f'--torch={source}; write the conversion elsewhere')
