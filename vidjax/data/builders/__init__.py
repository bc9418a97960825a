"""Dataset builders that write DMVR SequenceExample TFRecords through TFDS.

Importing this package registers every vidjax builder with TFDS, so
`tfds.builder('moving_shapes/tiny', data_dir=...)` works too. The input
pipeline looks names up here (`get_builder`), not in TFDS's registry: only
builders that write the DMVR layout can feed it.
"""

from vidjax.data.builders import base
from vidjax.data.builders import kinetics
from vidjax.data.builders import moving_shapes
from vidjax.data.builders import raw_video
from vidjax.data.builders import ssv2
from vidjax.errors import VidjaxError

DmvrBuilder = base.DmvrBuilder

_BUILDERS = (
    moving_shapes.MovingShapes,
    kinetics.Kinetics400,
    kinetics.Kinetics600,
    kinetics.Kinetics700,
    ssv2.Ssv2,
)
BUILDERS = {cls.name: cls for cls in _BUILDERS}


def _accepts_config(cls, config: str) -> bool:
  if issubclass(cls, raw_video.RawVideoBuilder):
    return cls.accepts_config(config)
  return config.split(':')[0] in cls.builder_configs


def get_builder(name: str, data_dir: str | None = None) -> DmvrBuilder:
  """Returns the builder for 'name' or 'name/config' (not yet prepared).

  Args:
    name: builder name with an optional '/config' (and ':version'). Raw-video
      builders (kinetics400/600/700, ssv2) also take the settings-derived
      config names `vidjax.data.prepare` writes, e.g. 'fps10_short128_q90'.
    data_dir: TFDS data dir; None means TFDS's default (`TFDS_DATA_DIR` or
      ~/tensorflow_datasets).

  Raises:
    VidjaxError: unknown dataset or config.
  """
  builder_name, _, config = name.partition('/')
  cls = BUILDERS.get(builder_name)
  if cls is None:
    known = ', '.join(sorted(BUILDERS))
    raise VidjaxError(f'Unknown dataset {name!r}; known datasets: {known}')
  if config and not _accepts_config(cls, config):
    configs = ', '.join(f'{builder_name}/{c}' for c in cls.builder_configs)
    if issubclass(cls, raw_video.RawVideoBuilder):
      configs += (f', or {builder_name}/fps<F|native>_short<S|orig>_q<Q> as '
                  'written by vidjax.data.prepare')
    raise VidjaxError(f'Unknown dataset config {name!r}; known: {configs}')
  return cls(config=config or None, data_dir=data_dir)
