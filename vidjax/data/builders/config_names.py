"""Raw-video builder configs named by their settings: 'fps25_short256_q90'.

A prepared dataset's directory name says how its videos were stored, so any
combination of settings is a config without registering it first: the name
encodes the settings and `parse_config_name` decodes them.
"""

from __future__ import annotations

import dataclasses
import re

import tensorflow_datasets as tfds


@dataclasses.dataclass(eq=False)
class RawVideoConfig(tfds.core.BuilderConfig):
  """How videos are stored.

  Attributes:
    fps: frames per second stored (nearest-in-time selection); None keeps
      every source frame.
    short_side: frames are resized so the shorter side is this; None keeps
      the source size.
    jpeg_quality: JPEG quality of the stored frames.
  """

  fps: float | None = 25.0
  short_side: int | None = 256
  jpeg_quality: int = 90


def config_name(fps: float | None, short_side: int | None,
                jpeg_quality: int) -> str:
  """Canonical config name for these settings, e.g. 'fps25_short256_q90'."""
  fps_part = 'native' if fps is None else f'{float(fps):g}'
  short_part = 'orig' if short_side is None else str(int(short_side))
  return f'fps{fps_part}_short{short_part}_q{int(jpeg_quality)}'


_CONFIG_NAME_RE = re.compile(
    r'^fps(?P<fps>native|\d+(?:\.\d+)?)_short(?P<short>orig|\d+)'
    r'_q(?P<q>\d+)$'
)


def parse_config_name(name: str) -> RawVideoConfig | None:
  """The config a `config_name` string denotes, or None if it is not one."""
  m = _CONFIG_NAME_RE.match(name)
  if not m:
    return None
  fps = None if m['fps'] == 'native' else float(m['fps'])
  short = None if m['short'] == 'orig' else int(m['short'])
  quality = int(m['q'])
  if (fps is not None and fps <= 0) or (short is not None and short <= 0) or (
      not 1 <= quality <= 100):
    return None
  return RawVideoConfig(
      name=name,
      description=f'{m["fps"]} fps, short side {m["short"]}, JPEG q{quality}.',
      fps=fps,
      short_side=short,
      jpeg_quality=quality,
  )
