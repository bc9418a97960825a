"""Files that appear whole or not at all, so an interrupted run leaves none
half-written."""

from __future__ import annotations

import os
import shutil


def atomic_write_text(path: str, text: str):
  tmp = f'{path}.tmp{os.getpid()}'
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
    shutil.copyfile(src, dest)
