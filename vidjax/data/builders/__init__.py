"""Dataset builders that write DMVR SequenceExample TFRecords through TFDS.

Importing this package registers every vidjax builder with TFDS, so
`tfds.builder('moving_shapes/tiny', data_dir=...)` works too. The input
pipeline looks names up here (`get_builder`), not in TFDS's registry: only
builders that write the DMVR layout can feed it.
"""

from vidjax.data.builders import base
from vidjax.data.builders import moving_shapes
from vidjax.errors import VidjaxError

DmvrBuilder = base.DmvrBuilder

# Add new builders here (Kinetics, Something-Something-v2, ...).
_BUILDERS = (moving_shapes.MovingShapes,)
BUILDERS = {cls.name: cls for cls in _BUILDERS}


def get_builder(name: str, data_dir: str | None = None) -> DmvrBuilder:
  """Returns the builder for 'name' or 'name/config' (not yet prepared).

  Args:
    name: builder name with an optional '/config' (and ':version').
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
  if config and config.split(':')[0] not in cls.builder_configs:
    configs = ', '.join(f'{builder_name}/{c}' for c in cls.builder_configs)
    raise VidjaxError(f'Unknown dataset config {name!r}; known: {configs}')
  return cls(config=config or None, data_dir=data_dir)
