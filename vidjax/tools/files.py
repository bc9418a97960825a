"""The tools' output files: checked before the work, replaced all at once.

A report that takes minutes to compute (an AOT compile) must not find out
at the end that its output cannot be written, and a failed write (a full
disk) must not leave half a file where the previous report was. Failures
are one VidjaxError naming the path and the errno text.
"""
import contextlib
import os
import secrets

from vidjax.errors import VidjaxError


def _temporary_beside(path: str) -> tuple[int, str]:
  """A new file `.NAME.XXXX.tmp` beside `path`, with the mode (0666 less
  the umask) a plain open would give."""
  directory, name = os.path.split(path)
  tmp = os.path.join(directory, f'.{name}.{secrets.token_hex(4)}.tmp')
  return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp


def check_writable(path: str, flag: str) -> str:
  """The absolute `path` if a file can be written there; else VidjaxError.

  Tries it: creates and deletes a file beside `path`, which is what a
  read-only filesystem, a missing or unwritable directory refuse (as they
  refuse root, unlike permission bits).
  """
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.isdir(path):
    raise VidjaxError(f'--{flag}={path} is a directory; give a file path')
  try:
    fd, probe = _temporary_beside(path)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise VidjaxError(f'cannot write --{flag}={path}: {e.strerror} '
                      f'({os.path.dirname(path)})') from None
  return path


def write_text(path: str, text: str | bytes):
  """Writes `text` (UTF-8; or bytes) to `path` through a temporary file
  beside it: on failure the previous file at `path` stays as it was."""
  write_bytes(path, text if isinstance(text, bytes) else text.encode('utf-8'))


def write_bytes(path: str, data: bytes):
  """`write_text` for bytes (images, archives)."""
  tmp = None
  try:
    fd, tmp = _temporary_beside(path)
    with os.fdopen(fd, 'wb') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    tmp = None
  except OSError as e:
    raise VidjaxError(f'cannot write {path}: {e.strerror}') from None
  finally:
    if tmp is not None:
      with contextlib.suppress(OSError):
        os.remove(tmp)
