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

  A value is converted to its default's type (so 'segments=16' is 16;
  a bool takes true/false, 1/0, yes/no). Raises VidjaxError, one line
  naming the argument and what it takes, for an unknown key, a pair
  without '=', a value of the wrong type or not among the choices. A key
  given twice takes its last value (configs prefix their own defaults).
  """
  options = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, sep, value = item.partition('=')
    key, value = key.strip(), value.strip()
    if not sep or key not in defaults:
      raise VidjaxError(f'bad config argument {item!r}: want key=value with '
                        f'a key in {sorted(defaults)}')
    options[key] = _convert(key, value, defaults[key], choices.get(key))
  for key, allowed in choices.items():
    if options[key] not in allowed:
      raise VidjaxError(f'bad config argument {key}={options[key]!r}: {key} '
                        f'must be one of {tuple(allowed)}, got '
                        f'{options[key]!r}')
  return options


_BOOLS = {'true': True, '1': True, 'yes': True,
          'false': False, '0': False, 'no': False}


def _convert(key: str, value: str, default, allowed):
  """`value` as its default's type, or one line naming what `key` takes."""
  kind = type(default)
  if kind is bool:
    if value.lower() in _BOOLS:
      return _BOOLS[value.lower()]
    takes = 'must be true or false'
  else:
    try:
      return kind(value)
    except ValueError:
      pass
    takes = (f'must be one of {tuple(allowed)}' if allowed is not None else
             f'must be {"an" if kind.__name__[0] in "aeiou" else "a"} '
             f'{kind.__name__}')
  raise VidjaxError(f'bad config argument {key}={value!r}: {key} {takes}, '
                    f'got {value!r}')
