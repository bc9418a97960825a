"""The multi-view test protocol: clip- and video-level top-1/top-5, and counts.

Every video is seen as `num_test_clips` temporal clips x `num_test_crops`
spatial crops (1x1, 1x3, 4x3, 10x3, ...; see `vidjax.data.pipeline`). Each
view is a separate element of the evaluation stream, so batches hold views of
any videos, a video's views may straddle batches, and nothing depends on the
batch size. On the host, the softmax scores of a video's views are summed by
video index and averaged (PySlowFast / Scenic): video-level accuracy. Clip
level is every view on its own. The loss is the views' mean cross-entropy.

A video is evaluated only if every one of its views could be produced; a
video with a skipped view (see `pipeline.SKIP_REASONS`) is counted under its
reason instead, so `num_examples` (videos evaluated) plus the skipped ones is
`num_examples_in_split`: every record is accounted for, unreadable bytes
included (`vidjax.data.tfrecord_reader`).
"""
from __future__ import annotations

import collections

from absl import logging
import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidjax.data import pipeline
from vidjax.parallel import mesh as mesh_lib


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
  """`metrics.topk_correct` in numpy: ties count against the label."""
  label_score = np.take_along_axis(scores, labels[:, None], axis=-1)
  higher_or_equal = np.sum(scores >= label_score, axis=-1) - 1
  return higher_or_equal < k


class ViewAggregator:
  """Accumulates per-view log-probabilities into per-video results."""

  def __init__(self, num_classes: int):
    self.num_classes = num_classes
    self._prob_sum = {}  # video index -> float64 [num_classes]
    self._views = collections.Counter()
    self._label = {}
    self._clip = collections.defaultdict(lambda: np.zeros(3))  # top1,5,loss
    self._status = {}  # video index -> first non-zero status seen
    self._padded = set()
    self._filename = {}

  def add(self, log_probs: np.ndarray, batch: dict):
    """One batch: `log_probs` float [B, C]; `batch` as the eval stream's."""
    log_probs = np.asarray(log_probs, np.float64)
    labels = np.asarray(batch['label'])
    real = np.asarray(batch['mask']) > 0
    c1 = topk_correct(log_probs, labels, 1)
    c5 = topk_correct(log_probs, labels, 5)
    loss = -np.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
    probs = np.exp(log_probs)
    for i, video in enumerate(np.asarray(batch['video_index'])):
      video = int(video)
      if video < 0:
        continue  # Padding.
      status = int(batch['status'][i])
      if status and video not in self._status:
        self._status[video] = status
        name = batch['filename'][i]
        self._filename[video] = (name.decode() if isinstance(name, bytes)
                                 else str(name))
      if batch['padded'][i]:
        self._padded.add(video)
      if not real[i]:
        continue
      if video in self._prob_sum:
        self._prob_sum[video] += probs[i]
      else:
        self._prob_sum[video] = probs[i].copy()
        self._label[video] = int(labels[i])
      self._views[video] += 1
      self._clip[video] += (c1[i], c5[i], loss[i])

  def skipped(self) -> dict[int, tuple[str, str]]:
    """{video index: (reason, filename)} of this process's skipped videos."""
    return {v: (pipeline.SKIP_REASONS[s - 1], self._filename.get(v, ''))
            for v, s in sorted(self._status.items())}

  def sums(self) -> np.ndarray:
    """float64 vector of additive totals (summed over processes).

    [videos, video top1, video top5, clips, clip top1, clip top5, loss,
    *skipped per reason, padded videos]
    """
    good = sorted(v for v in self._prob_sum if v not in self._status)
    totals = np.zeros(7 + len(pipeline.SKIP_REASONS) + 1)
    if good:
      scores = np.stack([self._prob_sum[v] / self._views[v] for v in good])
      labels = np.array([self._label[v] for v in good])
      clip = np.sum([self._clip[v] for v in good], axis=0)
      totals[:7] = (len(good), topk_correct(scores, labels, 1).sum(),
                    topk_correct(scores, labels, 5).sum(),
                    sum(self._views[v] for v in good), *clip)
    for status in self._status.values():
      totals[6 + status] += 1
    totals[-1] = len(self._padded - set(self._status))
    return totals

  def video_scores(self) -> dict[int, np.ndarray]:
    """{video index: mean softmax over its views} of evaluated videos."""
    return {v: self._prob_sum[v] / self._views[v] for v in self._prob_sum
            if v not in self._status}


def _results(totals: np.ndarray, split: str, num_in_split: int) -> dict:
  videos, clips = int(totals[0]), int(totals[3])
  ratio = lambda x, n: float(x / n) if n else float('nan')
  return {
      'split': split,
      'num_examples': videos,
      'num_examples_in_split': int(num_in_split),
      'top1': ratio(totals[1], videos),
      'top5': ratio(totals[2], videos),
      'num_clips': clips,
      'clip_top1': ratio(totals[4], clips),
      'clip_top5': ratio(totals[5], clips),
      'loss': ratio(totals[6], clips),
      'skipped': {reason: int(totals[7 + i])
                  for i, reason in enumerate(pipeline.SKIP_REASONS)},
      'padded_short_videos': int(totals[-1]),
  }


def _sum_over_processes(x: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x)).sum(axis=0)


def input_counts(counts: np.ndarray | None) -> dict:
  """The training stream's running totals as {name: count}, all processes."""
  counts = np.zeros(len(pipeline.COUNT_NAMES)) if counts is None else counts
  counts = _sum_over_processes(np.asarray(counts, np.float64))
  return {name: int(n) for name, n in zip(pipeline.COUNT_NAMES, counts)}


def evaluate(model, state, config: ml_collections.ConfigDict, mesh,
             meta, *, eval_step=None, video_sharding=None,
             split: str | None = None,
             views: tuple[int, int] | None = None) -> dict:
  """Evaluates `state` on `config.data.eval_split` with the multi-view test.

  Any `config.eval_batch_size` works (it need not divide by the device
  count: short batches are padded), and the numbers do not depend on it.
  `split` and `views` = (clips, crops) override the config's: the cheap
  pass the trainer runs during training (`config.eval_every_steps`).

  Returns:
    A JSON-able dict: video-level 'top1'/'top5' over 'num_examples' videos
    (of 'num_examples_in_split'), clip-level 'clip_top1'/'clip_top5' over
    'num_clips' views, 'loss', 'views', 'time_reversed', 'skipped' counts per
    reason (`pipeline.SKIP_REASONS`), and 'padded_short_videos'.
  """
  data = config.data
  if split is not None or views is not None:
    data = ml_collections.ConfigDict(data.to_dict())
    if views is not None:
      data.num_test_clips, data.num_test_crops = views
  split = split or data.eval_split

  def default_eval_step(state, video):
    logits = model.apply(
        {'params': state.params, 'batch_stats': state.batch_stats},
        video, train=False)
    return jax.nn.log_softmax(logits.astype(jnp.float32))

  sharding = mesh_lib.batch_sharding(mesh)
  eval_step = eval_step or jax.jit(default_eval_step, out_shardings=sharding)
  video_sharding = video_sharding or (lambda _: sharding)
  local_batch = config.eval_batch_size // jax.process_count()
  dataset = pipeline.build_dataset(
      data, split, train=False, batch_size=local_batch, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count())
  # Pad each host's batch to a multiple of its devices: the global array
  # must split evenly, the eval batch size need not.
  per_device = jax.local_device_count()
  padded_size = -(-local_batch // per_device) * per_device
  aggregator = ViewAggregator(meta.num_classes)
  for batch in dataset.as_numpy_iterator():
    video = batch['video']
    if padded_size != local_batch:
      video = np.concatenate([video, np.zeros(
          (padded_size - local_batch, *video.shape[1:]), video.dtype)])
    global_video = jax.make_array_from_process_local_data(
        video_sharding(padded_size * jax.process_count()), video)
    out = eval_step(state, global_video)
    if jax.process_count() > 1:
      out = multihost_utils.global_array_to_host_local_array(
          out, mesh, sharding.spec)
    aggregator.add(np.asarray(jax.device_get(out))[:local_batch], batch)
  for video, (reason, name) in aggregator.skipped().items():
    logging.warning('evaluation skipped video %d (%s): %s', video,
                    name or 'unknown file', reason)
  results = _results(_sum_over_processes(aggregator.sums()), split,
                     meta.num_examples[split])
  results['views'] = {'clips': data.num_test_clips,
                      'crops': data.num_test_crops}
  results['time_reversed'] = data.reverse_time
  return results


def summary(results: dict) -> str:
  """The run summary: accuracy at both levels and every count, as text."""
  views = results.get('views', {'clips': 1, 'crops': 1})
  lines = [
      f'Evaluation on {results["split"]} ({views["clips"]}x{views["crops"]} '
      f'views per video{", time-reversed" if results.get("time_reversed") else ""}'
      f'): {results["num_examples"]}/{results["num_examples_in_split"]} videos,'
      f' {results.get("num_clips", 0)} clips',
      f'  video level: top-1 {results["top1"]:.2%}, top-5 '
      f'{results["top5"]:.2%}',
      f'  clip level:  top-1 {results.get("clip_top1", float("nan")):.2%}, '
      f'top-5 {results.get("clip_top5", float("nan")):.2%}',
  ]
  # Only the kinds that occurred: nine zeros would hide the one that did not.
  counts = ', '.join(f'{k} {v}' for k, v in results.get('skipped', {}).items()
                     if v)
  lines.append(f'  skipped videos: {counts or "none"}; padded short videos: '
               f'{results.get("padded_short_videos", 0)}')
  train = results.get('train_input')
  if train:
    lines.append('  training input: ' + (', '.join(
        f'{k} {v}' for k, v in train.items() if v) or 'every record read'))
  return '\n'.join(lines)
