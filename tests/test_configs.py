"""The Kinetics-400 and SSv2 S3D-G configs load and resolve every key,
without the data; without the data, main fails with one clear line."""
import importlib
import os
import subprocess
import sys

import pytest

from configs import demo
from vidjax.data import pipeline
from vidjax.models import create_model
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
  pipeline._steps(data, True)
  pipeline._steps(data, False)
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
