"""The whole train function on the tiny embedded dataset (lm1b's train_test)."""
import json
import os
import signal

import flax
import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from vidjax import VidjaxError
from vidjax import convert
from vidjax.models import create_model
from vidjax.train import trainer
from configs import demo


def tiny_config(data_dir, **overrides):
  config = demo.get_config()
  config.model.depth_multiplier = 0.125
  config.model.min_depth = 8
  # No dropout: these tests assert memorisation, which dropout fights. With
  # the demo's 0.2, top-1 on the training clips after 80 steps was a lottery
  # over seeds (0.135, 0.462 for seeds 0, 1; untrained 0.077); without it,
  # 0.308, 0.423, 0.462 for seeds 0, 1, 2 (measured).
  config.model.dropout_rate = 0.0
  config.data.name = 'moving_shapes/tiny'
  config.data.data_dir = str(data_dir)
  config.data.num_frames = 4
  config.data.crop_size = 24
  config.data.shuffle_buffer = 64
  config.data.eval_split = 'train'  # Memorisation is what we can assert.
  config.batch_size = 8               # One per test device.
  config.eval_batch_size = 16
  config.optimizer.warmup_steps = 2
  # 0.02 learned too slowly from the 1.1.0 tiny data (top-1 0.15 after 40
  # steps); 0.1 makes the eval-mode loss of this 8-channel model explode.
  config.optimizer.learning_rate = 0.05
  config.log_every_steps = 5
  config.checkpoint_every_steps = 10
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


def restored_params(workdir, step):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  state = manager.restore(step)
  manager.close()
  return state['params']


def test_training_lowers_the_loss_and_writes_results(data_dir, tmp_path):
  before = trainer.train_and_evaluate(
      tiny_config(data_dir, total_steps=0), tmp_path / 'untrained')
  # 80 steps, not 40: at step 40 (lr still 0.025 of 0.05) the eval-mode
  # loss sits in a transient above the untrained 2.56 (3.5-4.1 measured,
  # with top-1 already at 0.33), on today's packages and on the tree that
  # passed before; by step 80 it is 2.11 with top-1 0.31 (no dropout).
  after = trainer.train_and_evaluate(
      tiny_config(data_dir, total_steps=80), tmp_path / 'trained')
  # Memorising the 52 training clips: the loss falls and top-1 rises well
  # above the untrained model's (which is chance, 1/13).
  assert after['loss'] < before['loss'], (before, after)
  assert after['top1'] > before['top1'] + 0.1, (before, after)
  assert after['num_examples'] == after['num_examples_in_split'] == 52
  written = json.loads((tmp_path / 'trained' / 'eval_results.json')
                       .read_text())
  assert written['step'] == 80
  for key in ('top1', 'top5', 'num_examples'):
    assert written[key] == after[key]
  assert (tmp_path / 'trained' / 'curves.png').stat().st_size > 0
  # TensorBoard event files for the scalars.
  assert any(name.startswith('events.out.tfevents')
             for name in os.listdir(tmp_path / 'trained'))


def test_preempted_run_resumes_with_the_same_parameters(data_dir, tmp_path,
                                                       monkeypatch):
  straight = tmp_path / 'straight'
  trainer.train_and_evaluate(tiny_config(data_dir, total_steps=20), straight)

  # Preempt the second run at step 7 the way a TPU VM would: SIGTERM.
  real_save = trainer.checkpoint.save

  def save_then_preempt(manager, step, state, force=False):
    saved = real_save(manager, step, state, force=force)
    if step == 7 and not force:
      os.kill(os.getpid(), signal.SIGTERM)
    return saved

  monkeypatch.setattr(trainer.checkpoint, 'save', save_then_preempt)
  preempted = tmp_path / 'preempted'
  with pytest.raises(VidjaxError, match='stopped by SIGTERM at step 7'):
    trainer.train_and_evaluate(tiny_config(data_dir, total_steps=20),
                               preempted)
  monkeypatch.undo()
  params_at_7 = restored_params(preempted, 7)

  # The same command again resumes at step 7 and ends exactly where the
  # uninterrupted run did: same batches, dropout keys and parameters.
  resumed = trainer.train_and_evaluate(
      tiny_config(data_dir, total_steps=20), preempted)
  assert resumed['step'] == 20
  a, b = restored_params(straight, 20), restored_params(preempted, 20)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, params_at_7, b)))


def _save_pretrained(directory, model_name, num_classes, config):
  model = create_model(model_name, num_classes=num_classes,
                       **config.model.to_dict())
  clip = (1, config.data.num_frames, config.data.crop_size,
          config.data.crop_size, 3)
  variables = jax.device_get(
      nn.unbox(model.init(jax.random.key(7), jax.numpy.zeros(clip))))
  convert.save_converted(str(directory), model_name, num_classes, variables)
  return variables


def test_init_from_converted_weights_keeps_all_but_the_resized_head(
    data_dir, tmp_path):
  # Warm-up from lr 0: the single step leaves the parameters as loaded.
  config = tiny_config(data_dir, total_steps=1)
  config.optimizer.warmup_steps = 1
  pretrained = _save_pretrained(tmp_path / 'pre', 's3dg', 5, config)
  config.init_from = str(tmp_path / 'pre')
  trainer.train_and_evaluate(config, tmp_path / 'finetune')
  params = flax.traverse_util.flatten_dict(
      restored_params(tmp_path / 'finetune', 1))
  expected = flax.traverse_util.flatten_dict(pretrained['params'])
  assert set(params) == set(expected)
  for path, value in params.items():
    if path[0] == 'Logits':  # 5 classes there, 13 here: a fresh head.
      assert value.shape[-1] == 13
    else:
      np.testing.assert_array_equal(value, expected[path], err_msg=str(path))


def test_init_from_another_model_is_an_error(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=1)
  _save_pretrained(tmp_path / 'pre', 'i2d', 13, config)
  config.init_from = str(tmp_path / 'pre')
  with pytest.raises(VidjaxError, match="holds 'i2d' weights"):
    trainer.train_and_evaluate(config, tmp_path / 'finetune')
