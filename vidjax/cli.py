"""One start-up and one error handler for every vidjax command line.

A command line defines its absl flags and a `main(argv)`, then

  if __name__ == '__main__':
    cli.run(main)

`run` does, in order:
  * the platform start-up before JAX starts a backend
    (`vidjax.platform.start_up`: TensorFlow's logs quiet, the CPU where
    libtpu is installed but no TPU attached, and on request the XLA:CPU
    flags measured fastest when the user set no XLA_FLAGS, said once in
    the log);
  * `--help`, `--helpshort`, `-h`, `-?` (the command's docstring and
    flags), `--helpfull` (every flag) and `--helpxml` print to stdout and
    exit 0, as every Unix tool does (absl's own exit 1);
  * a flag error, a config file that cannot load (`load_config`), a
    `VidjaxError` or an `app.UsageError` prints one line,
    `vidjax: error: <message>`, and exits non-zero: 1, or the error's
    `exit_code` (a preempted run: 75); so does an OSError (a full disk, a
    read-only or unwritable path: `describe_os_error`). `--verbose`,
    defined for every command, shows the traceback instead.
"""
from collections.abc import Callable, Sequence
import contextlib
import os
import sys
from typing import Any, NoReturn

from absl import app
from absl import flags
from absl import logging

from vidjax import platform
from vidjax.errors import VidjaxError

_HELP = ('help', 'helpshort', 'h', '?')
_HELPFULL = ('helpfull',)
_HELPXML = ('helpxml',)


def exit_with_error(message: str, code: int = 1) -> NoReturn:
  """`vidjax: error: <message>` on stderr, whitespace folded; exit `code`."""
  print(f'vidjax: error: {" ".join(message.split())}', file=sys.stderr)
  sys.exit(code)


def _root_cause(error: BaseException) -> BaseException:
  while error.__cause__ is not None:
    error = error.__cause__
  return error


def describe(error: BaseException) -> str:
  """The one line for `error`.

  A VidjaxError (or UsageError) says what it says. Anything else comes
  from a flag or a config file (absl and ml_collections wrap the cause):
  a file that cannot be read, an unknown `--config.key`, or the cause's
  own text.
  """
  if isinstance(error, (VidjaxError, app.UsageError)):
    return str(error)
  cause = _root_cause(error)
  if isinstance(cause, OSError) and cause.filename:
    return f'cannot read config file {cause.filename}: {cause.strerror}'
  if isinstance(cause, OSError) and 'Errno 2' in str(cause):
    lines = [l.strip() for l in str(cause).splitlines() if l.strip()]
    return f'cannot read config file: {lines[-1]}'
  if isinstance(cause, (KeyError, AttributeError)):
    # ml_collections' KeyError carries "'key'\nDid you mean ...": its
    # str() is that text quoted again, escapes and all.
    # An AttributeError wraps that KeyError itself as its argument.
    while cause.args and isinstance(cause.args[0], BaseException):
      cause = cause.args[0]
    text = str(cause.args[0]) if cause.args else str(cause)
    key, _, hint = text.partition('\n')
    message = f"unknown config key '{key.strip(chr(34) + chr(39))}'"
    return f'{message}; {" ".join(hint.split())}' if hint else message
  return ' '.join(str(cause).split()) or type(cause).__name__


STDOUT = '<standard output>'


def describe_os_error(error: OSError) -> str:
  """The one line for an OSError that reached `run`: its path and errno
  text. The standard output's own (print under `> file` on a full disk)
  is then dropped: Python would report it again when it flushes at exit."""
  text = error.strerror or str(error) or type(error).__name__
  if error.filename == STDOUT:
    with contextlib.suppress(OSError, ValueError):
      os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return f'cannot write the standard output: {text}'
  names = [str(n) for n in (error.filename, error.filename2) if n is not None]
  return f'{" -> ".join(names)}: {text}' if names else text


class _NamedStdout:
  """sys.stdout, whose failures name it (`describe_os_error`): print's own
  OSError carries no file name."""

  def __init__(self, stream):
    self._stream = stream

  def __getattr__(self, name):
    return getattr(self._stream, name)

  def _call(self, method, *args):
    try:
      return method(*args)
    except OSError as e:
      if e.filename is not None:
        raise
      raise type(e)(e.errno, e.strerror, STDOUT) from e

  def write(self, text):
    return self._call(self._stream.write, text)

  def writelines(self, lines):
    return self._call(self._stream.writelines, lines)

  def flush(self):
    return self._call(self._stream.flush)


def load_config(holder):
  """The config of a `config_flags.DEFINE_config_file` flag.

  config_flags defers a config file's load error until the first access;
  this makes it a VidjaxError (`describe`'s line) at a known place.
  """
  try:
    config = holder.value
    config.keys()
  except VidjaxError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise VidjaxError(describe(e)) from e
  return config


def _flag_names(argv: Sequence[str]) -> set[str]:
  """Names of the flags in argv[1:] up to `--`, as given ('--a=1' → 'a')."""
  names = set()
  for arg in argv[1:]:
    if arg == '--':
      break
    if arg.startswith('-') and arg != '-':
      names.add(arg.lstrip('-').split('=', 1)[0])
  return names


def _print_help(names: set[str], fv: flags.FlagValues, module: str,
                doc: str | None):
  if names & set(_HELPXML):
    fv.write_help_in_xml_format(sys.stdout)
    return
  full = bool(names & set(_HELPFULL))
  if full:
    text = fv.get_help()
  else:
    # The command's own flags, and those vidjax modules define for it
    # (vidjax.inference.source_flags: --checkpoint, --fps, ...).
    own = [module] + sorted(
        m for m in fv.flags_by_module_dict()
        if m != module and m.startswith('vidjax.'))
    text = '\n'.join(filter(None, (fv.module_help(m) for m in own)))
  print((doc or f'usage: {sys.argv[0]} [flags]').rstrip())
  if text:
    print(f'\nflags:\n{text}')
  if not full:
    print('\nTry --helpfull to get a list of all flags.')


def _define_verbose(fv: flags.FlagValues, module: str):
  if 'verbose' not in fv:
    flags.DEFINE_bool('verbose', False, 'Show tracebacks for user errors.',
                      flag_values=fv, module_name=module)


def run(main: Callable[[list[str]], Any], argv: Sequence[str] | None = None,
        *, flag_values: flags.FlagValues | None = None,
        cpu_xla_flags: str | None = None,
        log_level: int = logging.WARNING) -> Any:
  """Runs a command line's `main(argv)`: start-up, help, one-line errors.

  Args:
    main: takes the arguments left after the flags (argv[0] first).
    argv: default sys.argv.
    flag_values: the command's flags, default absl's global FLAGS (then
      through `absl.app.run`, which exits with main's return value).
      A command that parses its own FlagValues (to be re-entered in one
      process) gets main's return value back.
    cpu_xla_flags: XLA_FLAGS for a CPU run where the user set none (e.g.
      `platform.CPU_TRAINING_XLA_FLAGS`); None keeps XLA's defaults.
    log_level: absl's verbosity (absl.app.run would say INFO).
  """
  applied = platform.start_up(cpu_xla_flags)
  if not isinstance(sys.stdout, _NamedStdout):
    sys.stdout = _NamedStdout(sys.stdout)
  argv = list(sys.argv if argv is None else argv)
  fv = flags.FLAGS if flag_values is None else flag_values
  module = sys.argv[0] if main.__module__ == '__main__' else main.__module__
  _define_verbose(fv, module)
  logging.set_verbosity(log_level)

  def parse(args):
    names = _flag_names(args)
    if names & set(_HELP + _HELPFULL + _HELPXML):
      _print_help(names, fv, module, sys.modules[main.__module__].__doc__)
      sys.exit(0)
    try:
      return fv(args)
    except Exception as e:  # pylint: disable=broad-except
      if 'verbose' in names:
        raise
      exit_with_error(describe(e))

  def main_with_errors(args):
    if applied:
      logging.warning('vidjax: XLA_FLAGS unset; using the measured CPU flags '
                      '%s (set XLA_FLAGS to choose your own)', cpu_xla_flags)
    try:
      result = main(args)
      sys.stdout.flush()  # A full disk under `> file` shows here, not at exit.
      return result
    except (VidjaxError, app.UsageError) as e:
      if fv['verbose'].value:  # Parsed: main runs after the flags.
        raise
      exit_with_error(describe(e), getattr(e, 'exit_code', 1))
    except OSError as e:  # The environment's: a full disk, read-only, ...
      if fv['verbose'].value:
        raise
      exit_with_error(describe_os_error(e))

  if fv is flags.FLAGS:  # absl's logging and debugging flags; exits.
    app.run(main_with_errors, argv, flags_parser=parse)
  return main_with_errors(parse(argv))
