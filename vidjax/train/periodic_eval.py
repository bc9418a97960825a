"""Evaluation during training and the best checkpoint: settings and checks.

Config fields (`default_config` gives them; every config lists them):
  eval_every_steps  0: only the final test. Else a cheap pass over
                    `config.data.val_split` every that many steps, so a user
                    sees a validation curve long before the end (big_vision's
                    evaluators, Scenic's `eval_every_steps`, PySlowFast's
                    per-epoch validation).
  val_views         (clips, crops) of that pass; (1, 1): one centre clip.
  best_metric       one of VAL_METRICS, or None: keep the best checkpoint by
                    it under `<workdir>/best` (orbax's `best_fn`).
  best_mode         'max' or 'min'.
  test_checkpoint   what the final multi-view test evaluates: 'last'
                    (PySlowFast's default) or 'best'.
"""
import dataclasses

import ml_collections

from vidjax.errors import VidjaxError

# What a periodic evaluation reports, for `config.best_metric`.
VAL_METRICS = ('val/top1', 'val/top5', 'val/loss', 'val/clip_top1',
               'val/clip_top5')


def default_config(every: int) -> ml_collections.ConfigDict:
  """The fields above: evaluate every `every` steps, keep the best top-1."""
  return ml_collections.ConfigDict(dict(
      eval_every_steps=every, val_views=(1, 1), best_metric='val/top1',
      best_mode='max', test_checkpoint='last'))


VAL_METRICS = ('val/top1', 'val/top5', 'val/loss', 'val/clip_top1',
               'val/clip_top5')


@dataclasses.dataclass(frozen=True)
class PeriodicEval:
  """The config's periodic-evaluation fields, checked (see the module)."""

  every: int
  split: str | None
  views: tuple[int, int]
  best_metric: str | None
  best_mode: str
  test_checkpoint: str

  @classmethod
  def from_config(cls, config, meta) -> 'PeriodicEval':
    every = int(config.get('eval_every_steps') or 0)
    split = config.data.get('val_split') or None
    views = tuple(config.get('val_views') or (1, 1))
    best = config.get('best_metric') or None
    mode = config.get('best_mode') or 'max'
    test = config.get('test_checkpoint') or 'last'
    if every < 0:
      raise VidjaxError(f'config.eval_every_steps must be >= 0, got {every}')
    if every and split is None:
      raise VidjaxError('config.eval_every_steps is set but '
                        'config.data.val_split is not: name the validation '
                        'split to evaluate on during training')
    if every and split not in meta.num_examples:
      raise VidjaxError(
          f'config.eval_every_steps is set but dataset '
          f'{config.data.name!r} has no validation split {split!r} '
          f'(config.data.val_split); available: '
          f'{", ".join(sorted(meta.num_examples))}')
    if len(views) != 2 or views[0] < 1 or views[1] not in (1, 3):
      raise VidjaxError(f'config.val_views must be (clips >= 1, crops 1 or '
                        f'3), got {views}')
    if best is not None and best not in VAL_METRICS:
      raise VidjaxError(
          f'config.best_metric={best!r} is not a metric evaluation during '
          f'training produces; one of: {", ".join(VAL_METRICS)}')
    if best is not None and not every:
      raise VidjaxError(f'config.best_metric={best!r} needs '
                        'config.eval_every_steps > 0 to be measured')
    if mode not in ('max', 'min'):
      raise VidjaxError(f"config.best_mode must be 'max' or 'min', got "
                        f'{mode!r}')
    if test not in ('last', 'best'):
      raise VidjaxError(f"config.test_checkpoint must be 'last' or 'best', "
                        f'got {test!r}')
    if test == 'best' and best is None:
      raise VidjaxError("config.test_checkpoint='best' needs "
                        'config.best_metric')
    return cls(every, split, views, best, mode, test)

  def due(self, step: int) -> bool:
    return bool(self.every) and step % self.every == 0

  def scalars(self, results: dict) -> dict:
    out = {f'val/{k}': float(results[k]) for k in
           ('top1', 'top5', 'loss', 'clip_top1', 'clip_top5')}
    out.update({f'val/skipped/{k}': v for k, v in results['skipped'].items()})
    return out

  def line(self, step: int, results: dict, seconds: float) -> str:
    clips, crops = self.views
    return (f'step {step} | val top1 {results["top1"]:.3f} | top5 '
            f'{results["top5"]:.3f} | loss {results["loss"]:.4f} | '
            f'{results["num_examples"]}/{results["num_examples_in_split"]} '
            f'videos of {self.split}, {clips}x{crops} views, {seconds:.1f} s')
