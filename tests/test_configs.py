"""Every config has the schema's keys and passes its checks; a bad key,
type or range fails once, as one line naming the key. The Kinetics-400 and
SSv2 configs resolve every key without the data; without the data, main
fails with one clear line."""
import glob
import importlib
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from vidjax import config as config_lib
from vidjax.data import pipeline
from vidjax.data import pipeline_steps
from vidjax.data import transforms
from vidjax.errors import VidjaxError
from vidjax.models import create_model
from vidjax.models import registry
from vidjax.train import optim

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {'kinetics400_s3dg': ('kinetics400', 400),
           'ssv2_s3dg': ('ssv2', 174)}


def _flat_keys(d, prefix=''):
  keys = set()
  for k, v in d.items():
    if hasattr(v, 'items') and k != 'model':  # Model options are free-form.
      keys |= _flat_keys(v, f'{prefix}{k}.')
    else:
      keys.add(prefix + k)
  return keys


@pytest.mark.parametrize('name', sorted(CONFIGS))
def test_config_resolves(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  dataset, num_classes = CONFIGS[name]
  # Exactly the keys the trainer and pipeline read.
  assert _flat_keys(config) == _flat_keys(config_lib.default_config())
  data = config.data
  assert data.name == dataset
  assert (data.num_frames, data.crop_size) == (64, 224)
  assert 'sample_dense' in data.train_steps and 'sample_dense' in data.eval_steps
  assert round(data.crop_size * data.eval_resize_ratio) == 256
  pipeline._check_args(data, config.batch_size, 0, 0, 1)
  pipeline_steps.resolve(data, True)
  pipeline_steps.resolve(data, False)
  assert pipeline.normalization(data) == ((0.5,) * 3, (0.5,) * 3)
  create_model(config.model_name, num_classes=num_classes,
               **config.model.to_dict())
  optim.make_optimizer(config.optimizer, config.total_steps)
  assert 0 < config.optimizer.warmup_steps < config.total_steps
  assert config.batch_size % 8 == 0 and config.eval_batch_size % 8 == 0
  if dataset == 'ssv2':
    assert data.horizontal_flip is False
  else:
    assert data.horizontal_flip is True
    assert (data.num_test_clips, data.num_test_crops) == (10, 3)
  assert f'--config=configs/{name}.py' in importlib.import_module(
      f'configs.{name}').__doc__


def test_main_without_kinetics_is_one_clear_error(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run(
      [sys.executable, '-m', 'vidjax.main',
       '--config=configs/kinetics400_s3dg.py', f'--workdir={tmp_path}/wd',
       f'--config.data.data_dir={tmp_path}/tfds'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('vidjax: error:'), (
      proc.stderr)
  assert 'kinetics400' in lines[0]


TSM_CONFIGS = [
    ('kinetics400_tsm', '', 'kinetics400', 8, 'dense'),
    ('kinetics400_tsm', 'segments=16', 'kinetics400', 16, 'dense'),
    ('kinetics400_tsm', 'sampling=uniform', 'kinetics400', 8, 'uniform'),
    ('kinetics400_tsm', 'segments=16,sampling=uniform', 'kinetics400', 16,
     'uniform'),
    ('ssv2_tsm', '', 'ssv2', 8, 'uniform'),
    ('ssv2_tsm', 'segments=16', 'ssv2', 16, 'uniform'),
]


@pytest.mark.parametrize('name,arg,dataset,segments,sampling', TSM_CONFIGS)
def test_tsm_config_resolves(name, arg, dataset, segments, sampling):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config(arg)
  assert _flat_keys(config) == _flat_keys(config_lib.default_config())
  data = config.data
  assert data.name == dataset and data.num_frames == segments
  sampler = 'sample_dense' if sampling == 'dense' else 'sample_segments'
  assert sampler in data.train_steps and sampler in data.eval_steps
  assert 'crop_multi_scale' in data.train_steps
  if sampling == 'dense':  # The official stride: 64 // T.
    assert data.frame_stride == 64 // segments
  pipeline._check_args(data, config.batch_size, 0, 0, 1)
  pipeline_steps.resolve(data, True)
  pipeline_steps.resolve(data, False)
  assert pipeline.normalization(data) == transforms.NORMALIZATION[
      registry.get_spec(config.model_name).normalization]
  assert data.horizontal_flip is (dataset == 'kinetics400')
  model = create_model(config.model_name, num_classes=400,
                       **config.model.to_dict())
  assert model.num_segments == segments and model.shift == 'bidirectional'
  assert f'--config=configs/{name}.py' in module.__doc__


def test_tsm_config_argument_errors():
  from configs import kinetics400_tsm  # pylint: disable=g-import-not-at-top
  # VidjaxError (one line from main), not ValueError: see configs/arguments.
  with pytest.raises(VidjaxError, match='segments must be one of'):
    kinetics400_tsm.get_config('segments=12')
  with pytest.raises(VidjaxError, match='bad config argument'):
    kinetics400_tsm.get_config('frames=8')
  assert kinetics400_tsm.get_config('model=tsn_r50').model_name == 'tsn_r50'


@pytest.mark.parametrize('name,arg,dataset,frames,crop', [
    ('kinetics400_timesformer', '', 'kinetics400', 8, 224),
    ('kinetics400_timesformer', 'size=hr', 'kinetics400', 16, 448),
    ('kinetics400_timesformer', 'size=l,scheme=joint', 'kinetics400', 96,
     224),
    ('ssv2_timesformer', '', 'ssv2', 8, 224),
    ('ssv2_timesformer', 'scheme=axial', 'ssv2', 8, 224),
])
def test_timesformer_config_resolves(name, arg, dataset, frames, crop):
  module = importlib.import_module(f'configs.{name}')
  config = module.get_config(arg)
  assert _flat_keys(config) == _flat_keys(config_lib.default_config())
  data = config.data
  assert (data.name, data.num_frames, data.crop_size) == (dataset, frames,
                                                          crop)
  pipeline._check_args(data, config.batch_size, 0, 0, 1)
  pipeline_steps.resolve(data, True)
  pipeline_steps.resolve(data, False)
  spec = registry.get_spec(config.model_name)
  assert spec.family == 'timesformer'
  assert pipeline.normalization(data) == ((0.45,) * 3, (0.225,) * 3)
  assert pipeline.normalization(data) == transforms.NORMALIZATION[
      spec.normalization]
  model = create_model(config.model_name, num_classes=400,
                       **config.model.to_dict())
  assert (model.num_frames, model.image_size) == (frames, crop)
  assert data.horizontal_flip is (dataset == 'kinetics400')
  assert (data.num_test_clips, data.num_test_crops) == (1, 3)
  assert f'--config=configs/{name}.py' in module.__doc__


# -----------------------------------------------------------------------------
# The schema (vidjax/config.py): every config file, loaded as main loads it.
# -----------------------------------------------------------------------------

# Every config file with its `path:arg` variants worth loading.
VARIANTS = [
    ('demo', None),
    ('kinetics400_s3dg', None),
    ('ssv2_s3dg', None),
    ('kinetics400_tsm', ''),
    ('kinetics400_tsm', 'segments=16,sampling=uniform'),
    ('kinetics400_tsm', 'model=tsn_r50'),
    ('ssv2_tsm', ''),
    ('ssv2_tsm', 'segments=16,sampling=dense'),
    ('kinetics400_tsm_online', ''),
    ('kinetics400_tsm_online', 'segments=16'),
    ('kinetics400_timesformer', ''),
    ('kinetics400_timesformer', 'size=hr,scheme=joint'),
    ('ssv2_timesformer', ''),
    ('ssv2_timesformer', 'size=l,scheme=axial'),
]
_IDS = [f'{name}:{arg}' if arg else name for name, arg in VARIANTS]


def load(name, arg):
  module = importlib.import_module(f'configs.{name}')
  return module.get_config() if arg is None else module.get_config(arg)


def assert_one_line_error(config, *needles):
  with pytest.raises(VidjaxError) as error:
    config_lib.validate(config)
  message = str(error.value)
  assert '\n' not in message, message
  for needle in needles:
    assert needle in message, message
  return message


def test_every_config_file_is_covered():
  files = {os.path.basename(p)[:-3]
           for p in glob.glob(os.path.join(REPO, 'configs', '*.py'))}
  runnable = {f for f in files
              if hasattr(importlib.import_module(f'configs.{f}'),
                         'get_config')}
  assert runnable == {name for name, _ in VARIANTS}


@pytest.mark.parametrize('name,arg', VARIANTS, ids=_IDS)
def test_config_has_exactly_the_schema_keys_and_passes(name, arg):
  config = load(name, arg)
  assert _flat_keys(config) == _flat_keys(config_lib.default_config())
  config_lib.validate(config)


@pytest.mark.parametrize('name,arg', VARIANTS, ids=_IDS)
def test_unknown_key_is_one_line_naming_it(name, arg):
  config = load(name, arg)
  config.batch_sizee = 3
  assert_one_line_error(config, 'config.batch_sizee=3 is not a config key',
                        'did you mean batch_size?')
  config = load(name, arg)
  config.data.num_frame = 16  # A typo inside a section.
  assert_one_line_error(config, 'config.data.num_frame=16 is not a config key',
                        'data.num_frames')


@pytest.mark.parametrize('name,arg', VARIANTS, ids=_IDS)
def test_wrong_type_is_one_line_naming_it(name, arg):
  config = load(name, arg)
  config.data.num_frames = '16'
  assert_one_line_error(config, "config.data.num_frames='16' is a str; "
                        'expected int')
  config = load(name, arg)
  config.optimizer.nesterov = 1
  assert_one_line_error(config, 'config.optimizer.nesterov=1 is an int; '
                        'expected bool')
  config = load(name, arg)
  config.data.train_steps = ('parse', 3)
  assert_one_line_error(config, 'config.data.train_steps', 'expected a tuple '
                        'of str')


def test_the_schema_accepts_what_it_should():
  config = config_lib.default_config()
  config.optimizer.learning_rate = 1  # An int is a float.
  config.data.train_area_range = [0.3, 1.0]  # A list is a tuple.
  config.data.num_classes = 400  # Placeholders take their type...
  config.data.num_classes = None  # ...or None.
  config.best_metric = None  # No best checkpoint.
  config.test_checkpoint = 'last'
  # Any option the model declares (s3dg's), an int for a float.
  config.model = ml_collections.ConfigDict(dict(depth_multiplier=1))
  config.mesh = {'data': 2, 'time': 4}
  config_lib.validate(config)


@pytest.mark.parametrize('key,value,needle', [
    ('batch_size', 0, 'config.batch_size=0 must be > 0'),
    ('eval_batch_size', -8, 'config.eval_batch_size=-8 must be > 0'),
    ('total_steps', -1, 'config.total_steps=-1 must be >= 0'),
    ('data.num_frames', 0, 'config.data.num_frames=0 must be > 0'),
    ('data.frame_stride', 0, 'config.data.frame_stride=0 must be > 0'),
    ('data.crop_size', 0, 'config.data.crop_size=0 must be > 0'),
    ('data.num_test_crops', 2, 'config.data.num_test_crops=2 must be 1 or 3'),
    ('data.eval_resize_ratio', 0.9, 'must be >= 1 to centre-crop'),
    ('data.train_area_range', (0.5, 1.5), 'config.data.train_area_range'),
    ('data.mean', (0.5, 0.5), 'config.data.mean=(0.5, 0.5) must be 3'),
    ('checkpoint_every_steps', 0,
     'config.checkpoint_every_steps=0 must be > 0'),
    ('log_every_steps', 0, 'config.log_every_steps=0 must be > 0'),
    ('mesh.time', 0, 'sizes must be positive or -1'),
    ('mesh.time', -1, 'at most one axis may be -1'),
    ('bn_sync_devices', -1, 'config.bn_sync_devices=-1 must be >= 0'),
    ('best_mode', 'maximum', "config.best_mode='maximum' must be 'max' or "
     "'min'"),
    ('test_checkpoint', 'first', "config.test_checkpoint='first' must be "
     "'last' or 'best'"),
    ('val_views', (1, 2), 'config.val_views=(1, 2) must be (clips >= 1'),
    ('best_metric', 'val/f1', "best_metric='val/f1' is not a metric"),
    ('seed', None, 'config.seed is None; expected int'),
])
def test_ranges_and_choices_fail_at_load(key, value, needle):
  config = load('demo', None)
  *sections, last = key.split('.')
  section = config
  for part in sections:
    section = section[part]
  section[last] = value
  assert_one_line_error(config, needle)


def test_keys_that_only_make_sense_together():
  config = load('demo', None)
  config.eval_every_steps = 0
  assert_one_line_error(config, "best_metric='val/top1' needs "
                        'config.eval_every_steps > 0')
  config.best_metric = None
  config.test_checkpoint = 'best'
  assert_one_line_error(config, "config.test_checkpoint='best' needs "
                        'config.best_metric')


def test_more_keys_that_only_make_sense_together():
  """Each was read late, or not at all: a lone mean or std fell back to the
  preset silently, a flip map without the flip did nothing, input streams
  that do not divide the batch failed after the first compile."""
  config = load('demo', None)
  config.data.mean = (0.5, 0.5, 0.5)
  assert_one_line_error(
      config, 'config.data.mean is set but config.data.std is not: set both '
      "to override config.data.normalization='imagenet', or neither")
  config.data.mean, config.data.std = None, (0.2, 0.2, 0.2)
  assert_one_line_error(config, 'config.data.std is set but config.data.mean'
                        ' is not')
  config.data.std = None
  config.data.flip_label_map = {0: 1}
  assert_one_line_error(config, 'config.data.flip_label_map is set but '
                        'config.data.horizontal_flip is off')
  config.data.horizontal_flip = True
  config_lib.validate(config)
  config.data.input_shards = 3
  assert_one_line_error(config, 'config.data.input_shards=3 must divide '
                        f'config.batch_size={config.batch_size}')


@pytest.mark.parametrize('arg,message', [
    ('segments=abc', "bad config argument segments='abc': segments must be "
     "one of (8, 16), got 'abc'"),
    ('sampling=random', "bad config argument sampling='random': sampling "
     "must be one of ('dense', 'uniform'), got 'random'"),
    ('segments=12', 'bad config argument segments=12: segments must be one '
     'of (8, 16), got 12'),
    ('segments', "bad config argument 'segments': want key=value with a key "
     "in ['model', 'sampling', 'segments']"),
])
def test_config_argument_string_errors_name_the_argument(arg, message):
  with pytest.raises(VidjaxError) as error:
    load('kinetics400_tsm', arg)
  assert str(error.value) == message


def test_config_argument_types():
  from configs import arguments  # pylint: disable=g-import-not-at-top
  defaults = {'runlocal': False, 'frames': 8, 'lr': 0.1}
  # bool('false') is True: a bool takes words, not Python's truthiness.
  assert arguments.parse('runlocal=false', defaults, {})['runlocal'] is False
  assert arguments.parse('runlocal=True', defaults, {})['runlocal'] is True
  assert arguments.parse(' frames = 16 ,lr=0.5', defaults, {}) == {
      'runlocal': False, 'frames': 16, 'lr': 0.5}
  for arg, message in [
      ('runlocal=maybe', "runlocal='maybe': runlocal must be true or false"),
      ('frames=8.5', "frames='8.5': frames must be an int, got '8.5'"),
      ('lr=fast', "lr='fast': lr must be a float, got 'fast'")]:
    with pytest.raises(VidjaxError) as error:
      arguments.parse(arg, defaults, {})
    assert str(error.value).startswith('bad config argument ' + message)


def test_missing_key_is_one_line():
  config = load('demo', None)
  config.mesh = {'data': -1}
  assert_one_line_error(config, 'config.mesh.time is missing',
                        'expected int')


# Reads of a config field with a fallback (`config.get('fsdp', False)`,
# `data_config.get('mean')`) would be second defaults beside the schema's.
# vidjax/stream.py (which reads saved configs of older runs) and the free-form
# `config.model` are not config reads of this kind.
_FALLBACK_READ = re.compile(r'\b(config|config\.data|data_config|data|c)'
                            r'\.get\(')
_READERS = ('vidjax/main.py', 'vidjax/train', 'vidjax/data/pipeline.py',
            'vidjax/data/sources.py', 'vidjax/data/pipeline_steps.py',
            'vidjax/data/input_shards.py', 'vidjax/parallel', 'vidjax/tools')


def test_code_reads_config_fields_without_fallbacks():
  paths = []
  for reader in _READERS:
    full = os.path.join(REPO, reader)
    paths += ([full] if full.endswith('.py') else
              glob.glob(os.path.join(full, '*.py')))
  assert len(paths) > 10
  found = [f'{os.path.relpath(p, REPO)}:{i}: {line.strip()}'
           for p in paths for i, line in enumerate(open(p), 1)
           if _FALLBACK_READ.search(line)]
  assert not found, '\n'.join(found)


# Model options: declared by the registry, checked by the schema at load.
@pytest.mark.parametrize('name', ['demo', 'kinetics400_tsm',
                                  'kinetics400_timesformer'])
def test_undeclared_model_option_is_one_line(name):
  config = load(name, None)
  with config.unlocked():
    config.model.dropout_rat = 0.3
  message = assert_one_line_error(config, 'config.model.dropout_rat',
                                  f'model {config.model_name!r}')
  assert 'did you mean model.dropout_rate?' in message


def test_model_option_of_wrong_type_is_one_line():
  config = load('demo', None)
  # A config file that sets a string: the section is then built with it.
  config.model = ml_collections.ConfigDict(dict(depth_multiplier='0.5'))
  assert_one_line_error(config, "config.model.depth_multiplier='0.5'",
                        'expected float')
