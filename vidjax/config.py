"""One config schema: every key vidjax reads, with its one default.

`default_config()` holds every key and why its default is what it is; the
files in configs/ start from it and override what differs (the Flax
examples' default config). `validate(config)` runs where a config is loaded
(`vidjax.main`, `vidjax.tools.aot`, `trainer.train_and_evaluate`): a key the
schema does not have, a value of the wrong type or out of range fails there,
once, as one `VidjaxError` line naming the key, before anything is compiled
(MaxText validates its base config once). Code then reads fields as they
are (`config.fsdp`), with no defaults of its own.

The defaults are the demo's run (configs/demo.py: the embedded moving-shapes
videos, rendered on first use, no download; its batch and schedule) with
the logging, checkpoint and evaluation cadence every long run shares, which
the demo shortens. `config.model` is free-form: a model's own options.

Imports neither TensorFlow nor JAX: `python -m vidjax.main --config=...`
answers a bad flag before their start-up, and tools that only read configs
stay light (tests/test_config_loading.py).
"""
from collections.abc import Callable, Mapping
import difflib
from typing import Any

import ml_collections
from ml_collections import config_dict

from vidjax.errors import VidjaxError

# TSN's multi-scale crop: crop sides as fractions of the short side.
TSN_SCALES = (1.0, 0.875, 0.75, 0.66)

# The named pipeline steps (vidjax/data/pipeline_steps.py) of training and
# evaluation. Flip before resize: mirroring uint8 pixels moves a quarter of
# the bytes.
DEFAULT_TRAIN_STEPS = ('parse', 'sample_dense', 'crop_random_resized',
                       'decode', 'flip', 'resize', 'color_jitter', 'normalize')
DEFAULT_EVAL_STEPS = ('parse', 'sample_dense', 'decode', 'reverse_time',
                      'resize_short_side', 'spatial_crops', 'normalize')

# Logical axis name → mesh axis (vidjax/parallel/rules.py names them): batch
# over 'data', time over 'time', everything else whole. FSDP (config.fsdp)
# shards parameters on top of these rules (vidjax/parallel/state.py).
DEFAULT_RULES = (
    ('batch', 'data'),
    ('time', 'time'),
    ('height', None),
    ('width', None),
    ('channels', None),
    ('tokens', None),
    ('heads', None),
    ('mlp', None),
    ('embed', None),
    ('kernel_time', None),
    ('kernel_height', None),
    ('kernel_width', None),
    ('conv_in', None),
    ('conv_out', None),
    ('classes', None),
    ('head_dim', None),
)

# What a periodic evaluation reports (vidjax/train/periodic_eval.py), for
# `config.best_metric`.
VAL_METRICS = ('val/top1', 'val/top5', 'val/loss', 'val/clip_top1',
               'val/clip_top5')

# Keys whose default is a value but which may also be None (placeholders,
# whose default is None, may always be).
_MAY_BE_NONE = frozenset({'best_metric', 'data.val_split'})
# Free-form sections: a model's own options (checked by `_check_model`).
_FREE_FORM = frozenset({'model'})


def _section(**fields) -> ml_collections.ConfigDict:
  # Not type-safe in ml_collections' sense, which casts or raises as a
  # config file assigns, inside `get_config`, where the error reaches the
  # user as a traceback: `validate` checks every type, once, by key.
  return ml_collections.ConfigDict(fields, type_safe=False)


def _data_config() -> ml_collections.ConfigDict:
  """`config.data`: every field `pipeline.build_dataset` reads.

  Normalisation defaults to ImageNet's mean/std (`normalization='imagenet'`),
  what most converted 2D backbones (TSN/TSM, ViT/TimeSformer-style) expect;
  TF-slim I3D/S3D checkpoints want 'inception' ([-1, 1]). A model trained
  from scratch (the demo) works with either.
  """
  c = _section()
  c.name = 'moving_shapes/default'
  c.train_split = 'train'
  c.eval_split = 'test'  # Held out; 'validation' is there for tuning.
  # What evaluation during training reads (config.eval_every_steps).
  c.val_split = 'validation'
  c.data_dir = config_dict.placeholder(str)  # None: TFDS's default dir.
  # name='tfrecord': existing DMVR/Scenic TFRecords instead of a builder.
  # Glob patterns (comma-separated for several) of train_split / eval_split.
  c.train_pattern = config_dict.placeholder(str)
  c.eval_pattern = config_dict.placeholder(str)
  c.num_classes = config_dict.placeholder(int)
  c.class_names_file = config_dict.placeholder(str)  # One name per line.

  c.train_steps = DEFAULT_TRAIN_STEPS
  c.eval_steps = DEFAULT_EVAL_STEPS
  # Training streams the global batch is drawn from, each reading its own
  # files; None: one per process. Fix it to keep the data order when the
  # number of hosts changes (vidjax/train/trainer.py: train_stream).
  c.input_shards = config_dict.placeholder(int)
  c.num_frames = 8  # Frames per clip (segments, for 'sample_segments').
  c.frame_stride = 2  # 8 frames span 15 of the 17 stored.
  c.crop_size = 48  # From 64 px frames.
  # crop_random_resized: not Inception's (0.08, 1), tiny crops could cut the
  # moving shape out.
  c.train_area_range = (0.5, 1.0)
  c.train_aspect_range = (3 / 4, 4 / 3)
  # crop_multi_scale (TSN).
  c.multi_scale_scales = TSN_SCALES
  c.multi_scale_max_distort = 1
  # Off: a mirrored left-to-right clip is a right-to-left one. With a
  # {label: mirrored label} map the flip swaps those labels.
  c.horizontal_flip = False
  c.flip_label_map = config_dict.placeholder(dict)
  c.color_jitter = 0.0  # Strength; 0 is off.
  c.normalization = 'imagenet'  # A transforms.NORMALIZATION preset.
  c.mean = config_dict.placeholder(tuple)  # Both set: override the preset.
  c.std = config_dict.placeholder(tuple)

  # Evaluation: clips x crops views per video, scores averaged per video.
  c.num_test_clips = 1
  c.num_test_crops = 1  # 1 (centre) or 3 (along the long side).
  c.eval_resize_ratio = 1.15  # Short side 55, then crops of 48.
  c.reverse_time = False  # Evaluate on time-reversed clips.
  # Counted in raw serialized clips (~25 KB each here; Kinetics clips are
  # megabytes, size it accordingly).
  c.shuffle_buffer = 1024
  return c


def default_config() -> ml_collections.ConfigDict:
  """Every key vidjax reads, with its default (see the module docstring)."""
  config = _section()
  config.seed = 0

  # A name of vidjax.models.list_models() and its options, free-form: what
  # a config leaves out keeps the model's own default.
  config.model_name = 's3dg'
  config.model = _section()

  config.data = _data_config()

  config.batch_size = 16  # Global: clips per step over all processes.
  config.eval_batch_size = 32  # Views, not videos.
  # 0: no training, only evaluate a checkpoint in the workdir or init_from's
  # weights (never a random model: vidjax/train/workdir.py).
  config.total_steps = 600
  config.label_smoothing = 0.0
  # SGD with momentum, linear warm-up then cosine decay; weight decay skips
  # BN parameters and biases (vidjax/train/optim.py).
  config.optimizer = _section(
      learning_rate=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4,
      warmup_steps=40)

  # Sharding: mesh ('data', 'time'), rules, FSDP (docs/scale.md).
  # Axis sizes, -1 taking the devices the other axis leaves;
  # --config.mesh.time=2 splits clips over 2 devices.
  config.mesh = _section(data=-1, time=1)
  config.logical_axis_rules = DEFAULT_RULES
  # Also shard parameters and optimizer state over 'data'.
  config.fsdp = False
  # BN statistics over groups of this many devices along 'data'; 0: the
  # global batch (vidjax/train/setup.py: bn_groups).
  config.bn_sync_devices = 0

  # Weights to fine-tune from: a `python -m vidjax.convert` output, a trained
  # workdir (its latest checkpoint) or one checkpoint step (the classifier
  # is re-initialised when the class count differs).
  config.init_from = config_dict.placeholder(str)

  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  config.keep_checkpoints = 3

  # Evaluation during training (vidjax/train/periodic_eval.py). 0: only the
  # final test. Else a cheap pass over `data.val_split` every that many
  # steps, so a user sees a validation curve long before the end
  # (big_vision's evaluators, Scenic's `eval_every_steps`, PySlowFast's
  # per-epoch validation).
  config.eval_every_steps = 2000
  config.val_views = (1, 1)  # (clips, crops) of that pass: one centre clip.
  # One of VAL_METRICS, or None: keep the best checkpoint by it under
  # <workdir>/best (orbax's `best_fn`), in `best_mode` 'max' or 'min'.
  config.best_metric = 'val/top1'
  config.best_mode = 'max'
  # What the final multi-view test evaluates: 'last' (PySlowFast's default)
  # or 'best'.
  config.test_checkpoint = 'last'
  return config


# -----------------------------------------------------------------------------
# Validation.
# -----------------------------------------------------------------------------


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises one-line VidjaxError for the first thing wrong with `config`.

  In order: keys the schema lacks or misses, types, then the ranges and
  choices that need no dataset or devices. What does (a split's existence,
  a batch that divides over the mesh) is checked where those are known,
  still before compiling.
  """
  _check_keys_and_types(config, default_config(), '')
  check_ranges(config)
  _check_combinations(config)
  _check_model(config)


def _check_model(config) -> None:
  """`config.model` against the options `config.model_name` declares.

  The registry (vidjax/models/spec.py) declares each model's options and
  their defaults; a key it does not declare, or a value whose type differs
  from its default's, fails here at load, before anything is built. Imported
  here, not at the top: loading a config imports no JAX (the registry's
  families do).
  """
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  spec = registry.get_spec(config.model_name)
  options = spec.options
  for key, value in config.model.items():
    path = _name(f'model.{key}')
    if key not in options:
      close = difflib.get_close_matches(key, list(options), n=1)
      hint = f'; did you mean model.{close[0]}?' if close else ''
      raise VidjaxError(
          f'{path}={value!r} is not an option of model {spec.name!r} '
          f'(its options: {", ".join(sorted(options)) or "none"}){hint}')
    default = options[key]
    if value is None or default is None:
      continue
    expected = type(default)
    if expected is float and type(value) is int:  # 1 for 1.0 is fine.
      continue
    if expected in (tuple, list) and isinstance(value, (tuple, list)):
      continue
    if type(value) is not expected:
      raise VidjaxError(f'{path}={value!r} is {_a(value)}; expected '
                        f'{_type_name(expected)}')


def _name(path: str) -> str:
  return f'config.{path}'


def _type_name(expected: type) -> str:
  return {ml_collections.ConfigDict: 'a section'}.get(expected,
                                                     expected.__name__)


def _a(value: Any) -> str:
  """'an int', 'a str': what `value` is, for a message."""
  name = type(value).__name__
  return f'{"an" if name[0] in "aeiou" else "a"} {name}'


def _is(value: Any, expected: type) -> bool:
  """`value` fits `expected`: an int is a float, a list a tuple, no bools."""
  if isinstance(value, bool):
    return expected is bool
  if expected is float:
    return isinstance(value, (int, float))
  if expected is tuple:
    return isinstance(value, (tuple, list))
  if expected is dict:
    return isinstance(value, (Mapping, ml_collections.ConfigDict))
  return isinstance(value, expected)


def _element_type(default: tuple) -> type | None:
  kinds = {type(x) for x in default}
  if kinds == {int, float}:
    return float
  return kinds.pop() if len(kinds) == 1 else None


def _check_keys_and_types(config, schema, prefix: str) -> None:
  if not isinstance(config, ml_collections.ConfigDict):
    what = f'{_name(prefix[:-1])}={config!r}' if prefix else 'the config'
    raise VidjaxError(f'{what} is {_a(config)}; expected a section '
                      '(ml_collections.ConfigDict)')
  for key in config.keys():
    if key not in schema:
      close = difflib.get_close_matches(key, list(schema.keys()), n=1)
      hint = f'; did you mean {prefix}{close[0]}?' if close else ''
      raise VidjaxError(
          f'{_name(prefix + key)}={config[key]!r} is not a config key'
          f'{hint} (every key and its default: vidjax/config.py)')
  for key in schema.keys():
    path = prefix + key
    default = schema[key]
    expected = schema.get_type(key)
    if key not in config:
      raise VidjaxError(f'{_name(path)} is missing (expected '
                        f'{_type_name(expected)}; default {default!r}, '
                        'vidjax/config.py)')
    value = config[key]
    if isinstance(default, ml_collections.ConfigDict):
      if path in _FREE_FORM:
        if not isinstance(value, ml_collections.ConfigDict):
          raise VidjaxError(f'{_name(path)}={value!r} is {_a(value)}; '
                            'expected a section (ml_collections.ConfigDict)'
                            ' of model options')
      else:
        _check_keys_and_types(value, default, path + '.')
      continue
    optional = default is None or path in _MAY_BE_NONE
    if value is None:
      if optional:
        continue
      raise VidjaxError(f'{_name(path)} is None; expected '
                        f'{_type_name(expected)}')
    if not _is(value, expected):
      raise VidjaxError(
          f'{_name(path)}={value!r} is {_a(value)}; expected '
          f'{_type_name(expected)}{" or None" if optional else ""}')
    if expected is tuple and default:
      element = _element_type(default)
      bad = [x for x in value if element and not _is(x, element)]
      if bad:
        raise VidjaxError(
            f'{_name(path)}={tuple(value)!r} holds {bad[0]!r}, '
            f'{_a(bad[0])}; expected a tuple of {_type_name(element)}')


# Ranges and choices, by key: (test, what a good value is).
_Check = tuple[Callable[[Any], bool], str]


def _pair(test: Callable[[Any, Any], bool], what: str) -> _Check:
  return (lambda v: len(v) == 2 and test(*v)), what


def _rgb(v) -> bool:
  return len(v) == 3 and all(_is(x, float) for x in v)


_POSITIVE = (lambda v: v > 0), 'must be > 0'
_NON_NEGATIVE = (lambda v: v >= 0), 'must be >= 0'
_OPTIONAL_POSITIVE = (lambda v: v is None or v > 0), 'must be > 0 (or None)'
_RANGES: dict[str, _Check] = {
    'batch_size': _POSITIVE,
    'eval_batch_size': _POSITIVE,
    'total_steps': _NON_NEGATIVE,
    'label_smoothing': ((lambda v: 0 <= v < 1), 'must be in [0, 1)'),
    'optimizer.learning_rate': _NON_NEGATIVE,
    'optimizer.momentum': _NON_NEGATIVE,
    'optimizer.weight_decay': _NON_NEGATIVE,
    'optimizer.warmup_steps': _NON_NEGATIVE,
    'bn_sync_devices': _NON_NEGATIVE,
    'log_every_steps': _POSITIVE,
    'checkpoint_every_steps': _POSITIVE,
    'keep_checkpoints': _POSITIVE,
    'eval_every_steps': _NON_NEGATIVE,
    'val_views': _pair(lambda clips, crops: clips >= 1 and crops in (1, 3),
                       'must be (clips >= 1, crops 1 or 3)'),
    'best_metric': ((lambda v: v is None or v in VAL_METRICS),
                    'is not a metric evaluation during training produces; '
                    f'one of: {", ".join(VAL_METRICS)}'),
    'best_mode': ((lambda v: v in ('max', 'min')), "must be 'max' or 'min'"),
    'test_checkpoint': ((lambda v: v in ('last', 'best')),
                        "must be 'last' or 'best'"),
    'data.input_shards': _OPTIONAL_POSITIVE,
    'data.num_classes': _OPTIONAL_POSITIVE,
    'data.num_frames': _POSITIVE,
    'data.frame_stride': _POSITIVE,
    'data.crop_size': _POSITIVE,
    'data.train_area_range': _pair(lambda lo, hi: 0 < lo <= hi <= 1,
                                   'must be (low, high), 0 < low <= high <= 1'),
    'data.train_aspect_range': _pair(lambda lo, hi: 0 < lo <= hi,
                                     'must be (low, high), 0 < low <= high'),
    'data.multi_scale_scales': ((lambda v: v and all(0 < s <= 1 for s in v)),
                                'must be fractions in (0, 1]'),
    'data.multi_scale_max_distort': _NON_NEGATIVE,
    'data.color_jitter': _NON_NEGATIVE,
    'data.mean': ((lambda v: v is None or _rgb(v)),
                  'must be 3 numbers (R, G, B) or None'),
    'data.std': ((lambda v: v is None or (_rgb(v) and min(v) > 0)),
                 'must be 3 positive numbers (R, G, B) or None'),
    'data.num_test_clips': ((lambda v: v >= 1), 'must be >= 1'),
    'data.num_test_crops': ((lambda v: v in (1, 3)), 'must be 1 or 3'),
    'data.eval_resize_ratio': ((lambda v: v >= 1),
                               'must be >= 1 to centre-crop'),
    'data.shuffle_buffer': _POSITIVE,
}


def check_ranges(config, section: str = '') -> None:
  """The ranges and choices of `config` (or of its `section`, e.g. 'data',
  when `config` is that section alone: the pipeline checks its own)."""
  prefix = f'{section}.' if section else ''
  for path, (test, what) in _RANGES.items():
    if not path.startswith(prefix):
      continue
    value = config
    for part in path[len(prefix):].split('.'):
      value = value[part]
    if not test(value):
      raise VidjaxError(f'{_name(path)}={value!r} {what}')
  if not section:
    check_mesh(config.mesh)


def check_mesh(spec: Mapping[str, int]) -> None:
  """Mesh axis sizes: each positive or -1 (the rest), at most one -1."""
  sizes = [int(spec[name]) for name in spec]
  if sum(s == -1 for s in sizes) > 1:
    raise VidjaxError(f'config.mesh {dict(spec)}: at most one axis may be -1')
  if any(s == 0 or s < -1 for s in sizes):
    raise VidjaxError(f'config.mesh {dict(spec)}: sizes must be positive or '
                      '-1')


def _check_combinations(config) -> None:
  """Keys that only make sense together."""
  if config.eval_every_steps and config.data.val_split is None:
    raise VidjaxError('config.eval_every_steps is set but '
                      'config.data.val_split is not: name the validation '
                      'split to evaluate on during training')
  if config.best_metric is not None and not config.eval_every_steps:
    raise VidjaxError(f'config.best_metric={config.best_metric!r} needs '
                      'config.eval_every_steps > 0 to be measured')
  if config.test_checkpoint == 'best' and config.best_metric is None:
    raise VidjaxError("config.test_checkpoint='best' needs "
                      'config.best_metric')
  data = config.data
  if (data.mean is None) != (data.std is None):
    given, other = ('mean', 'std') if data.std is None else ('std', 'mean')
    raise VidjaxError(f'config.data.{given} is set but config.data.{other} '
                      f'is not: set both to override config.data.'
                      f'normalization={data.normalization!r}, or neither')
  if data.flip_label_map and not data.horizontal_flip:
    raise VidjaxError('config.data.flip_label_map is set but '
                      'config.data.horizontal_flip is off: the map is only '
                      'used by the flip')
  if data.input_shards and config.batch_size % data.input_shards:
    raise VidjaxError(f'config.data.input_shards={data.input_shards} must '
                      f'divide config.batch_size={config.batch_size}')
