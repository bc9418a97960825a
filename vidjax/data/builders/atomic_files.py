"""Files that appear whole or not at all, so an interrupted run leaves none
half-written.

A failed write (a full disk) removes its temporary file, so the space is
free again for the resumed run, and re-raises the OSError with the file's
path (a failed write() itself names none).
"""

from __future__ import annotations

import contextlib
import os
import shutil


@contextlib.contextmanager
def removed_on_error(tmp: str, target: str, always_name: bool = False):
  """Removes `tmp` if the block fails; an OSError that names no file (or
  any, with always_name) is raised again naming `target`."""
  try:
    yield
  except BaseException as e:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if isinstance(e, OSError) and (always_name or not e.filename):
      raise OSError(e.errno, e.strerror or str(e), target) from e
    raise


def atomic_write_text(path: str, text: str):
  tmp = f'{path}.tmp{os.getpid()}'
  with removed_on_error(tmp, path):
    # newline='': the text is written as given (the manifest's CSV rows end
    # in \r\n, as the csv module writes them).
    with open(tmp, 'w', encoding='utf-8', newline='') as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)


def link_or_copy(src: str, dest: str):
  """Hard link (no second copy of a shard), copy across filesystems."""
  if os.path.exists(dest):
    os.remove(dest)
  try:
    os.link(src, dest)
  except OSError:
    # shutil names the source in its errors; what failed is the write.
    with removed_on_error(dest, dest, always_name=True):
      shutil.copyfile(src, dest)
