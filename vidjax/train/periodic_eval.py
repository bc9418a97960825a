"""Evaluation during training and the best checkpoint.

The config fields (`eval_every_steps`, `val_views`, `best_metric`,
`best_mode`, `test_checkpoint`, `data.val_split`) and their defaults are in
vidjax/config.py, which checks them at load; what needs the dataset (the
validation split's existence) is checked here.
"""
import dataclasses

from vidjax.errors import VidjaxError


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
    every = config.eval_every_steps
    split = config.data.val_split
    if every and split not in meta.num_examples:
      raise VidjaxError(
          f'config.eval_every_steps is set but dataset '
          f'{config.data.name!r} has no validation split {split!r} '
          f'(config.data.val_split); available: '
          f'{", ".join(sorted(meta.num_examples))}')
    return cls(every, split, tuple(config.val_views), config.best_metric,
               config.best_mode, config.test_checkpoint)

  def due(self, step: int) -> bool:
    return bool(self.every) and step % self.every == 0

  def runs_between(self, start: int, end: int) -> bool:
    """A validation is due at some step in start+1 .. end."""
    return bool(self.every) and end // self.every > start // self.every

  def scalars(self, results: dict) -> dict:
    """config.VAL_METRICS (and the skip counts) of `results`."""
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
