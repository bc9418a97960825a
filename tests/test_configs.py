"""The Kinetics-400 and SSv2 S3D-G configs load and resolve every key,
without the data; without the data, main fails with one clear line."""
import importlib
import os
import subprocess
import sys

import pytest

from configs import demo
from vidjax.data import pipeline
from vidjax.data import pipeline_steps
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
  # Exactly the keys the trainer and pipeline read (the demo has them all).
  assert _flat_keys(config) == _flat_keys(demo.get_config())
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
  assert _flat_keys(config) == _flat_keys(demo.get_config())
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
  assert pipeline.normalization(data) == pipeline.normalization(
      {'normalization': registry.get_spec(config.model_name).normalization})
  assert data.horizontal_flip is (dataset == 'kinetics400')
  model = create_model(config.model_name, num_classes=400,
                       **config.model.to_dict())
  assert model.num_segments == segments and model.shift == 'bidirectional'
  assert f'--config=configs/{name}.py' in module.__doc__


def test_tsm_config_argument_errors():
  from configs import kinetics400_tsm  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match='segments must be one of'):
    kinetics400_tsm.get_config('segments=12')
  with pytest.raises(ValueError, match='bad config argument'):
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
  assert _flat_keys(config) == _flat_keys(demo.get_config())
  data = config.data
  assert (data.name, data.num_frames, data.crop_size) == (dataset, frames,
                                                          crop)
  pipeline._check_args(data, config.batch_size, 0, 0, 1)
  pipeline_steps.resolve(data, True)
  pipeline_steps.resolve(data, False)
  spec = registry.get_spec(config.model_name)
  assert spec.family == 'timesformer'
  assert pipeline.normalization(data) == ((0.45,) * 3, (0.225,) * 3)
  assert pipeline.normalization(data) == pipeline.normalization(
      {'normalization': spec.normalization})
  model = create_model(config.model_name, num_classes=400,
                       **config.model.to_dict())
  assert (model.num_frames, model.image_size) == (frames, crop)
  assert data.horizontal_flip is (dataset == 'kinetics400')
  assert (data.num_test_clips, data.num_test_crops) == (1, 3)
  assert f'--config=configs/{name}.py' in module.__doc__
