"""Heat maps over the input frames: a PNG grid or a GIF, and the arrays.

The command writes them with `vidjax.tools.files.write_bytes`: whole or
not at all (a temporary file beside the path, renamed over it).
"""
from __future__ import annotations

import io

import numpy as np

ALPHA = 0.5  # The heat map's weight in an overlay.
COLORMAP = 'jet'
MAX_COLUMNS = 8  # Frames shown in a PNG grid (evenly spaced).
FORMATS = ('png', 'gif')


def normalised(heat: np.ndarray) -> np.ndarray:
  """heat / its maximum over the whole clip (frames stay comparable); a map
  that is zero everywhere stays zero."""
  heat = np.asarray(heat, np.float64)
  top = float(heat.max()) if heat.size else 0.0
  return heat / top if top > 0 else np.zeros_like(heat)


def patch_upsampled(patch_map: np.ndarray, patch_size: int) -> np.ndarray:
  """[T, h, w] per patch → [T, h·p, w·p]: each patch's value on its pixels."""
  return np.repeat(np.repeat(patch_map, patch_size, 1), patch_size, 2)


def displayed(clip: np.ndarray, mean, std) -> np.ndarray:
  """A normalised clip [T, H, W, 3] back to [0, 1] pixels."""
  frames = clip * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(frames, 0.0, 1.0)


def overlaid(frames: np.ndarray, heat: np.ndarray) -> np.ndarray:
  """frames [T, H, W, 3] in [0, 1] blended with heat [T, H, W] in [0, 1]."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  colours = colormaps[COLORMAP](heat)[..., :3]
  return (1.0 - ALPHA) * frames + ALPHA * colours


def shown_frames(count: int, limit: int = MAX_COLUMNS) -> np.ndarray:
  """Indices of at most `limit` evenly spaced frames of `count`."""
  if count <= limit:
    return np.arange(count)
  return np.unique(np.round(np.linspace(0, count - 1, limit)).astype(int))


def png_grid(frames: np.ndarray, heat: np.ndarray, title: str) -> bytes:
  """A PNG: one column per shown frame, rows [input, overlay]."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  shown = shown_frames(len(frames))
  fig = figure.Figure(figsize=(1.6 * len(shown), 3.6))
  axes = fig.subplots(2, len(shown), squeeze=False)
  blend = overlaid(frames[shown], heat[shown])
  for column, t in enumerate(shown):
    for row, image in enumerate((frames[t], blend[column])):
      ax = axes[row, column]
      ax.imshow(image)
      ax.set_xticks([])
      ax.set_yticks([])
    axes[0, column].set_title(f'frame {t}', fontsize=8)
  axes[0, 0].set_ylabel('input', fontsize=8)
  axes[1, 0].set_ylabel('overlay', fontsize=8)
  fig.suptitle(title, fontsize=9)
  out = io.BytesIO()
  fig.savefig(out, format='png', dpi=100)
  return out.getvalue()


def gif(frames: np.ndarray, heat: np.ndarray, fps: float) -> bytes:
  """A looping GIF, one image per frame: [input | overlay] side by side."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pairs = np.concatenate([frames, overlaid(frames, heat)], axis=2)
  images = [Image.fromarray(np.round(p * 255).astype(np.uint8))
            for p in pairs]
  out = io.BytesIO()
  images[0].save(out, format='GIF', save_all=True, append_images=images[1:],
                 duration=max(20, round(1000 / fps)), loop=0)
  return out.getvalue()


def npz(**arrays) -> bytes:
  out = io.BytesIO()
  np.savez_compressed(out, **arrays)
  return out.getvalue()
