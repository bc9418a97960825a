"""`python -m vidjax.main`, restoring SECONDS late: a slow host, for tests.

  python tests/parallel/late_host.py SECONDS [vidjax.main flags...]

The sleep stands for a host that restores, compiles or reads slower than
the others; it is patched in here so that vidjax itself has no test knob.
"""
import sys
import time

from vidjax import main
from vidjax.train import checkpoint


def late(function, seconds: float):
  def late_function(*args, **kwargs):
    time.sleep(seconds)
    return function(*args, **kwargs)
  return late_function


if __name__ == '__main__':
  checkpoint.restore_newest_intact = late(
      checkpoint.restore_newest_intact, float(sys.argv.pop(1)))
  main.run()
