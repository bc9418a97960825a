"""Streams of raw records: each process's share, shuffles, resume points.

Training: every epoch's file and record order is a pure function of
(seed, epoch), so a resumed stream jumps straight to any record. Evaluation:
one pass in file order, each record with its position in the split.
"""

from __future__ import annotations

import tensorflow as tf

from vidjax.data import tfrecord_reader
from vidjax.errors import VidjaxError

# Shards read concurrently while training. Fixed, not AUTOTUNE: the cycle
# length changes the record order, which must not depend on the machine.
_INTERLEAVE_CYCLE = 8




def process_share(shards, process_index, process_count):
  """This process's shards, its records per epoch, and record-level sharding.

  Whole shards when there are enough (each host reads only its files);
  otherwise every process reads all files and keeps every P-th record.
  """
  if len(shards) >= process_count:
    mine = shards[process_index::process_count]
    return list(mine), sum(s.num_records for s in mine), False
  total = sum(s.num_records for s in shards)
  count = len(range(process_index, total, process_count))
  return list(shards), count, True


def read(shards) -> tf.data.Dataset:
  """(serialized, read status) of every record of `shards`, in order."""
  paths = tf.constant([s.path for s in shards])
  counts = tf.constant([s.num_records for s in shards], tf.int64)
  return tf.data.Dataset.from_tensor_slices((paths, counts)).flat_map(
      tfrecord_reader.dataset)


def train_records(
    shards, *, seed, process_index, process_count, shuffle_buffer, start
):
  """(global index, serialized, read status) from record `start` on."""
  mine, epoch_size, by_record = process_share(
      shards, process_index, process_count
  )
  if epoch_size == 0:
    raise VidjaxError(
        f'Process {process_index} of {process_count} gets no training '
        f'records: the split has fewer clips than processes.'
    )
  paths = tf.constant([s.path for s in mine])
  counts = tf.constant([s.num_records for s in mine], tf.int64)

  def epoch_records(epoch):
    # Each epoch's shuffles use seeds derived from (seed, epoch) alone, so
    # resuming can jump straight to any epoch.
    file_seed, record_seed = tf.unstack(
        tf.random.stateless_uniform(
            [2],
            seed=tf.stack([tf.constant(seed, tf.int64), epoch]),
            minval=None,
            maxval=None,
            dtype=tf.int64,
        )
    )
    if by_record:
      ds = read(mine).shard(process_count, process_index)
    else:
      ds = tf.data.Dataset.from_tensor_slices((paths, counts))
      ds = ds.shuffle(len(mine), seed=file_seed)
      ds = ds.interleave(
          tfrecord_reader.dataset,
          cycle_length=min(len(mine), _INTERLEAVE_CYCLE),
          block_length=1,
          num_parallel_calls=tf.data.AUTOTUNE,
          deterministic=True,
      )
    ds = ds.shuffle(shuffle_buffer, seed=record_seed)
    return ds.enumerate().map(
        lambda pos, rec: (epoch * epoch_size + pos, *rec))

  first_epoch, skip = divmod(start, epoch_size)
  ds = tf.data.Dataset.counter(first_epoch).flat_map(epoch_records)
  return ds.skip(skip)


def eval_records(shards, process_index, process_count):
  """(index in the split, serialized, read status) of this process's
  records, in order."""
  offsets = [0]
  for s in shards:
    offsets.append(offsets[-1] + s.num_records)
  if len(shards) >= process_count:
    mine = list(range(process_index, len(shards), process_count))
    paths = tf.constant([shards[i].path for i in mine])
    counts = tf.constant([shards[i].num_records for i in mine], tf.int64)
    starts = tf.constant([offsets[i] for i in mine], tf.int64)
    ds = tf.data.Dataset.from_tensor_slices((paths, counts, starts))
    return ds.flat_map(
        lambda p, n, o: tfrecord_reader.dataset(p, n).enumerate().map(
            lambda j, rec: (o + j, *rec)))
  ds = read(shards).enumerate().map(lambda j, rec: (j, *rec))
  return ds.shard(process_count, process_index) if process_count > 1 else ds


def eval_share_sizes(shards, process_count) -> list[int]:
  if len(shards) >= process_count:
    return [sum(s.num_records for s in shards[p::process_count])
            for p in range(process_count)]
  total = sum(s.num_records for s in shards)
  return [len(range(p, total, process_count)) for p in range(process_count)]
