"""Processes that all-gather until stopped: a peer to kill, for tests.

  python tests/parallel/gather_forever.py PORT NUM_PROCESSES PROCESS_ID

Started like vidjax.main (through vidjax.cli, so with its error handling)
without a model to compile: it prints `gathered N` after each collective.
"""
import sys
import time

from vidjax import cli
from vidjax.parallel import distributed


def main(argv):
  port, num_processes, process_id = (int(a) for a in argv[1:])
  distributed.start(f'127.0.0.1:{port}', num_processes, process_id, 60)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  for n in range(10**6):
    multihost_utils.process_allgather(jnp.array([process_id, n]))
    print(f'gathered {n}', flush=True)
    time.sleep(0.2)


if __name__ == '__main__':
  cli.run(main, sys.argv)
