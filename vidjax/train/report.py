"""Training curves as a PNG, for people who would rather look than read."""
import io

from etils import epath
import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top


def plot_curves(history: list[dict], path: str):
  """Loss and top-1 against step from the logged training scalars."""
  steps = [h['step'] for h in history]
  fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
  ax_loss.plot(steps, [h['train/loss'] for h in history])
  ax_loss.set(xlabel='step', ylabel='train loss', title='Loss')
  ax_acc.plot(steps, [h['train/top1'] for h in history])
  ax_acc.set(xlabel='step', ylabel='train top-1', title='Accuracy',
             ylim=(0, 1))
  for ax in (ax_loss, ax_acc):
    ax.grid(alpha=0.3)
  fig.tight_layout()
  # Through epath: the workdir may be a gs:// URL.
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=100)
  plt.close(fig)
  epath.Path(path).write_bytes(buffer.getvalue())
