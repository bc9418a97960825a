"""The one exception type for user-facing failures.

Anything a user can fix (a bad config key, a missing file, an unwritable
workdir, a split that does not exist) raises `VidjaxError` with a message that
names the problem. `vidjax.main` prints it as one line and exits non-zero.
"""


class VidjaxError(Exception):
  """A problem with the user's input, reported without a traceback."""
