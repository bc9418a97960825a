"""Writes converted records into shards that are complete or absent.

A shard is first written as `*.tmp<pid>`, renamed when complete, and counted
as finished only once its per-video results (JSON) are written too; a
resumed run redoes exactly the shards without both files. A shard that fails
(a full disk, Ctrl-C) removes its partial file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence

from vidjax.data.builders import atomic_files
from vidjax.data.builders import progress as progress_lib
from vidjax.data.builders import shard_plan


def write_shards(jobs: Sequence[shard_plan.ShardJob], results: Iterator,
                 progress: progress_lib.ConversionProgress | None,
                 interrupt_after: int | None = None):
  """`results`: (record or None, manifest row) per task, in job order.

  interrupt_after: tests raise KeyboardInterrupt after that many videos, as
  a Ctrl-C would.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  count = 0
  for job in jobs:
    rows = []
    tmp = f'{job.tfrecord_path}.tmp{os.getpid()}'
    # A failed shard (a full disk, a Ctrl-C) leaves no partial file behind.
    with atomic_files.removed_on_error(tmp, job.tfrecord_path):
      with tf.io.TFRecordWriter(tmp) as writer:
        for _ in job.tasks:
          record, row = next(results)
          if record is not None:
            writer.write(record)
          rows.append(row)
          count += 1
          if progress:
            progress.update(count)
          if interrupt_after is not None and count >= interrupt_after:
            raise KeyboardInterrupt
      os.replace(tmp, job.tfrecord_path)
    atomic_files.atomic_write_text(job.results_path, json.dumps(rows))
  if progress:
    progress.update(count, final=True)
