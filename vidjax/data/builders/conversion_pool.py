"""Videos converted by a pool of processes, handed back in plan order."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import itertools
import multiprocessing
from collections.abc import Iterable, Iterator

from vidjax.data import video_worker
from vidjax.errors import VidjaxError


@contextlib.contextmanager
def converted_in_order(name: str, items: Iterable, workers: int
                       ) -> Iterator[Iterator]:
  """Yields an iterator of `video_worker.convert_video(item)`, in order.

  One process runs in-process; more are spawned, not forked (the parent has
  TensorFlow's threads running). ProcessPoolExecutor rather than Pool: a
  worker that dies (e.g. a script without an `if __name__ == '__main__'`
  guard, re-run by every spawned child) breaks the pool with an error
  instead of a silent hang.
  """
  items = iter(items)
  if workers <= 1:
    yield map(video_worker.convert_video, items)
    return
  executor = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=multiprocessing.get_context('spawn'),
      initializer=video_worker.init_worker)

  def in_order():
    # A bounded window of submitted videos, consumed in plan order, so
    # each shard is written front to back and memory stays bounded.
    window = collections.deque()
    for item in itertools.islice(items, 4 * workers):
      window.append(executor.submit(video_worker.convert_video, item))
    while window:
      result = window.popleft().result()
      for item in itertools.islice(items, 1):
        window.append(executor.submit(video_worker.convert_video, item))
      yield result

  try:
    yield in_order()
  except concurrent.futures.process.BrokenProcessPool as e:
    raise VidjaxError(
        f'{name}: a conversion worker process died ({e}); when '
        "preparing from a script, put the call under `if __name__ == "
        "'__main__':` (workers are spawned and import the main module)"
    ) from e
  finally:
    executor.shutdown(wait=True, cancel_futures=True)
