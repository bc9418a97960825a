"""Where a file operation failed and why, from Python's or TensorFlow's error.

Python's OSError carries the errno text and, for open/mkdir/rename, the
path (a failed write() has none: `atomic_files` adds it). TensorFlow's file
layer raises `tf.errors.OpError` whose message is `<path>; <strerror>`
(e.g. `/d/x.tfrecord; No space left on device`, checked with a write past
RLIMIT_FSIZE: `...; File too large`).
"""

from __future__ import annotations

import os


def is_file_error(error: BaseException) -> bool:
  """An OSError, or TensorFlow's error for a file operation."""
  if isinstance(error, OSError):
    return True
  # By name: this module is imported where TensorFlow need not be.
  return any(c.__name__ == 'OpError' for c in type(error).__mro__)


def where_and_why(error: BaseException, default_dir: str) -> tuple[str, str]:
  """(directory, reason) of a file error; default_dir when it names none."""
  if isinstance(error, OSError):
    path = os.fspath(error.filename) if error.filename else ''
    reason = error.strerror or str(error)
  else:
    message = getattr(error, 'message', '') or str(error)
    path, sep, reason = message.partition('; ')
    if not sep:
      path, reason = '', message
  if not path:
    return default_dir, reason or type(error).__name__
  directory = path if os.path.isdir(path) else os.path.dirname(path)
  return directory or default_dir, reason or type(error).__name__
