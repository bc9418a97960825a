"""This process's rows of every global training batch, from input shards.

The global batch is drawn from `config.data.input_shards` training streams
(default: one per process), each reading only its own files. A process
runs `input_shards / process_count` of them and concatenates their rows,
so the data order is a pure function of (seed, step, input_shards): one
process with input_shards=2 trains on exactly the batches of two processes
(tests/parallel/test_multihost.py), and a run resumed on another number of
hosts sees exactly the batches an uninterrupted one would have.

`check` (run by the pre-flight, before compiling) says when the streams do
not fit the processes, the batch or the split; `SkipWatch` says, once per
reason, when skipped records become more than a stray one in a hundred.
"""
import sys

import jax
import numpy as np

from vidjax.data import pipeline
from vidjax.errors import VidjaxError


def check(config, process_count: int, train_records: int | None = None):
  """Raises VidjaxError unless the input streams fit the run.

  `input_shards` (None: one per process) must be a multiple of the
  processes and divide the batch; with `train_records` (the training
  split's size), every stream must have a record to read. The trainer runs
  this before compiling (`preflight`); `train_batches` again.
  """
  shards = config.data.input_shards or process_count
  if shards % process_count or config.batch_size % shards:
    raise VidjaxError(
        f'config.data.input_shards={shards} must be a multiple of the '
        f'{process_count} processes and divide config.batch_size='
        f'{config.batch_size}')
  if (train_records is not None and config.total_steps > 0
      and train_records < shards):
    raise VidjaxError(
        f'split {config.data.train_split!r} has {train_records} records, '
        f'fewer than its {shards} input streams (config.data.input_shards, '
        'one per process by default): some would read nothing')


def train_batches(config, start_step: int):
  """This process's rows of every global training batch, from `start_step`.

  Yields dicts of numpy arrays; 'counts' (the running input counts) is
  summed over the process's streams, every other key concatenated.
  """
  n_proc, index = jax.process_count(), jax.process_index()
  check(config, n_proc)
  shards = config.data.input_shards or n_proc  # None: one per process.
  per_process = shards // n_proc
  streams = [pipeline.build_dataset(
      config.data, config.data.train_split, train=True,
      batch_size=config.batch_size // shards, seed=config.seed,
      start_step=start_step, process_index=index * per_process + j,
      process_count=shards).as_numpy_iterator() for j in range(per_process)]
  watch = SkipWatch(config.log_every_steps,
                        config.batch_size // n_proc, config.data.num_classes)
  while True:
    parts = [next(s) for s in streams]
    if len(parts) == 1:
      batch = parts[0]
    else:
      batch = {k: np.concatenate([p[k] for p in parts])
               for k in parts[0] if k != 'counts'}
      batch['counts'] = sum(p['counts'] for p in parts)
    watch(batch['counts'][-1])
    yield batch


class SkipWatch:
  """One loud line per skip reason, once, when skipped records pile up.

  Skipped records are replaced and counted, so the run goes on, training on
  what is left: a `num_classes` smaller than the labels makes most records
  'bad_label', a step list that makes no clip of `crop_size` makes them all
  'undecodable'. More than `share` of the records read in an interval of
  `every` steps skipped for one reason is no stray record: say so on
  stderr.
  """

  def __init__(self, every: int, rows: int, num_classes: int | None,
               share: float = 0.01):
    self._every, self._read, self._share = every, every * rows, share
    self._num_classes = num_classes
    self._steps = 0
    self._last = np.zeros(len(pipeline.SKIP_REASONS), np.int64)
    self.warned = set()

  def __call__(self, counts) -> None:
    """`counts`: this process's running totals after one more batch."""
    self._steps += 1
    if self._steps % self._every:
      return
    now = np.array(counts[:len(pipeline.SKIP_REASONS)], np.int64)  # A copy.
    fresh, self._last = now - self._last, now
    for reason, n in zip(pipeline.SKIP_REASONS, fresh):
      if reason in self.warned or n <= self._share * self._read:
        continue
      self.warned.add(reason)
      print(f'vidjax: WARNING: {n} of the last {self._read} training records '
            f'read ({n / self._read:.0%}) are skipped as {reason}'
            f'{self._hint(reason)}', file=sys.stderr, flush=True)

  def _hint(self, reason: str) -> str:
    n = self._num_classes
    if reason == 'bad_label':
      classes = (f'[0, {n}) (config.data.num_classes={n})' if n
                 else "the dataset's classes")
      return f': their labels are outside {classes}; is num_classes right?'
    if reason == 'undecodable':
      return (': corrupt frames, or steps (config.data.train_steps) that do '
              'not make clips of config.data.crop_size')
    return ' (each is logged above with its file)'
