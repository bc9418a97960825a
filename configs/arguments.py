"""The `path:arg` config argument (big_vision's convention): key=value,...

`--config=configs/kinetics400_tsm.py:segments=16,sampling=uniform` hands
'segments=16,sampling=uniform' to `get_config(arg)`.

A bad argument raises VidjaxError, not ValueError: config_flags appends the
traceback to a ValueError raised in `get_config`, and the user would read
it folded into the one error line.
"""
from vidjax.errors import VidjaxError


def parse(arg: str | None, defaults: dict, choices: dict) -> dict:
  """`defaults` updated by `arg`; every value one of `choices[key]`.

  A value is converted to its default's type (so 'segments=16' is 16).
  Raises VidjaxError for an unknown key, a pair without '=' or a value not
  among the choices.
  """
  options = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    if not sep or key not in defaults:
      raise VidjaxError(f'bad config argument {item!r}: want key=value with '
                        f'a key in {sorted(defaults)}')
    try:
      options[key] = type(defaults[key])(value)
    except ValueError:
      raise VidjaxError(f'bad config argument {item!r}') from None
  for key, allowed in choices.items():
    if options[key] not in allowed:
      raise VidjaxError(f'{key} must be one of {tuple(allowed)}, got '
                        f'{options[key]!r}')
  return options
