"""What every vidjax command line shares: one-line errors, no tracebacks."""
from collections.abc import Callable
import sys
from typing import NoReturn

from absl import flags


def exit_with_error(message: str, code: int = 1) -> NoReturn:
  """`vidjax: error: <message>` on stderr, whitespace folded; exit `code`."""
  print(f'vidjax: error: {" ".join(message.split())}', file=sys.stderr)
  sys.exit(code)


def flags_parser(fail: Callable[[BaseException, bool], None]):
  """absl's flag parser, but a bad flag goes to `fail(error, verbose)`.

  For `app.run(main, flags_parser=...)`: absl would print a usage wall.
  """
  def parse(argv):
    try:
      return flags.FLAGS(argv)
    except Exception as e:  # pylint: disable=broad-except
      fail(e, '--verbose' in argv)
  return parse
