"""Training curves as a PNG, for people who would rather look than read."""
import io

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

from vidjax.train import workdir  # pylint: disable=g-import-not-at-top


def _series(history: list[dict], key: str) -> tuple[list, list]:
  rows = [h for h in history if key in h]
  return [h['step'] for h in rows], [h[key] for h in rows]


def plot_curves(history: list[dict], path: str):
  """Loss and top-1 against step: training, and validation where evaluated
  during training (`config.eval_every_steps`)."""
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
  for split, style in (('train', '-'), ('val', 'o-')):
    ax_loss.plot(*_series(history, f'{split}/loss'), style, label=split)
    ax_acc.plot(*_series(history, f'{split}/top1'), style, label=split)
  ax_loss.set(xlabel='step', ylabel='loss', title='Loss')
  ax_acc.set(xlabel='step', ylabel='top-1', title='Accuracy', ylim=(0, 1))
  if any('val/loss' in h for h in history):
    ax_acc.legend()
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  plt.close(fig)
  # Whole or not at all, through epath (the workdir may be a gs:// URL).
  workdir.write_bytes(path, buffer.getvalue())
