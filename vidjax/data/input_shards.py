"""This process's rows of every global training batch, from input shards.

The global batch is drawn from `config.data.input_shards` training streams
(default: one per process), each reading only its own files. A process
runs `input_shards / process_count` of them and concatenates their rows,
so the data order is a pure function of (seed, step, input_shards): one
process with input_shards=2 trains on exactly the batches of two processes
(tests/parallel/test_multihost.py), and a run resumed on another number of
hosts sees exactly the batches an uninterrupted one would have.
"""
import jax
import numpy as np

from vidjax.data import pipeline
from vidjax.errors import VidjaxError


def train_batches(config, start_step: int):
  """This process's rows of every global training batch, from `start_step`.

  Yields dicts of numpy arrays; 'counts' (the running input counts) is
  summed over the process's streams, every other key concatenated.
  """
  n_proc, index = jax.process_count(), jax.process_index()
  shards = config.data.input_shards or n_proc  # None: one per process.
  if shards % n_proc or config.batch_size % shards:
    raise VidjaxError(
        f'config.data.input_shards={shards} must be a multiple of the '
        f'{n_proc} processes and divide config.batch_size='
        f'{config.batch_size}')
  per_process = shards // n_proc
  streams = [pipeline.build_dataset(
      config.data, config.data.train_split, train=True,
      batch_size=config.batch_size // shards, seed=config.seed,
      start_step=start_step, process_index=index * per_process + j,
      process_count=shards).as_numpy_iterator() for j in range(per_process)]
  while True:
    parts = [next(s) for s in streams]
    if len(parts) == 1:
      yield parts[0]
      continue
    batch = {k: np.concatenate([p[k] for p in parts])
             for k in parts[0] if k != 'counts'}
    batch['counts'] = sum(p['counts'] for p in parts)
    yield batch
