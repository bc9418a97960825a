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
from vidjax.data import pipeline
from vidjax.inference import loader
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
  # Off unless a test is about it: each pass costs an evaluation.
  config.eval_every_steps = 0
  config.best_metric = None
  config.update(overrides)
  return config


# The fixtures data_dir and straight (an uninterrupted 20-step run) are in
# tests/train/conftest.py, shared with the other trainer tests.


def restored_params(workdir, step):
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'))
  state = manager.restore(step)
  manager.close()
  return state['params']


def test_training_lowers_the_loss_and_writes_results(data_dir, tmp_path):
  # In float64 arithmetic (the model's dtype; jax's x64 mode for the run).
  # In float32 this 8-channel model's training is chaotic in summation
  # order: BN normalises 1x1 maps of a few frames, and two runs whose
  # gradients agree to 1e-5 at initialisation differ in loss by 0.05% at
  # step 4 and 0.7% at step 5. Five float32 runs of the same maths
  # (layers.conv's narrow convs as a matmul or not, two XLA flag sets)
  # ended with eval top-1 0.17-0.40 and eval loss 1.77-2.58 (untrained
  # 2.56). In float64 the two conv lowerings trained to the same losses,
  # to every printed digit, over 40 steps, and this test's run ends at
  # loss 2.3131 and top-1 0.269 (untrained 2.5650, 0.077) under either
  # XLA flag set.
  def float64_config(total_steps):
    config = tiny_config(data_dir, total_steps=total_steps)
    config.model.dtype = 'float64'
    return config

  with jax.enable_x64(True):
    before = trainer.train_and_evaluate(float64_config(0),
                                        tmp_path / 'untrained',
                                        evaluate_untrained=True)
    after = trainer.train_and_evaluate(float64_config(80),
                                       tmp_path / 'trained')
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
                                                       monkeypatch, straight):

  # Preempt the second run at step 7 the way a TPU VM would: SIGTERM.
  real_save = trainer.checkpoint.save

  def save_then_preempt(manager, step, state, force=False, **kwargs):
    saved = real_save(manager, step, state, force=force, **kwargs)
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
  # And the same curves: steps 6-7, summed before the preemption, are in the
  # report of step 10 (history.json's pending interval).
  assert history_entries(preempted) == history_entries(straight)


def history_entries(workdir):
  return json.loads((workdir / 'history.json').read_text())['entries']


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


def test_the_loader_reads_a_trainer_run(data_dir, straight):
  """The contract the trainer saved, and the trainer's own weights."""
  config = tiny_config(data_dir)
  meta = pipeline.dataset_info(config.data)
  loaded = loader.load(straight)
  assert (loaded.source.kind, loaded.source.step) == ('workdir', 20)
  contract = loaded.contract
  assert contract.class_names == tuple(meta.class_names)
  assert len(contract.class_names) == contract.num_classes == 13
  # moving_shapes renders at its image size, with no frame rate of its own.
  assert (contract.fps, contract.short_side) == (
      'source', meta.metadata['image_size'])
  # Its frames are stored as JPEGs at the builders' quality.
  assert contract.jpeg_quality == 90
  assert (contract.dataset, contract.num_frames, contract.crop_size) == (
      'moving_shapes/tiny', 4, 24)
  manager = ocp.CheckpointManager(os.path.join(straight, 'checkpoints'))
  state = manager.restore(20)
  manager.close()
  for collection in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, loaded.variables[collection],
                 state[collection])
  model = create_model(config.model_name, num_classes=13,
                       **config.model.to_dict())
  clip = np.linspace(-1, 1, 4 * 24 * 24 * 3, dtype=np.float32).reshape(
      1, 4, 24, 24, 3)
  logits = jax.jit(lambda m, v: m.apply(v, clip, train=False),
                   static_argnums=0)
  trained = logits(model, {'params': state['params'],
                           'batch_stats': state['batch_stats']})
  np.testing.assert_array_equal(logits(loaded.model, loaded.variables),
                                trained)
  assert np.std(np.asarray(trained)) > 0


def test_init_from_another_model_is_an_error(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=1)
  _save_pretrained(tmp_path / 'pre', 'i2d', 13, config)
  config.init_from = str(tmp_path / 'pre')
  with pytest.raises(VidjaxError, match="holds 'i2d' weights"):
    trainer.train_and_evaluate(config, tmp_path / 'finetune')


# A training run in its own process whose step-20 checkpoint save is killed
# (SIGKILL: no handler, no cleanup) after orbax wrote the step's files and
# before it renamed the temporary directory, the last act of a save.
_KILLED_SAVE = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from orbax.checkpoint._src.path import atomicity
real = atomicity.AtomicRenameTemporaryPath.finalize
async def finalize(self, *args, **kwargs):
  if self._final_path.name == '20':
    os.kill(os.getpid(), signal.SIGKILL)
  return await real(self, *args, **kwargs)
atomicity.AtomicRenameTemporaryPath.finalize = finalize
from tests.train import test_trainer
from vidjax.train import trainer
trainer.train_and_evaluate(
    test_trainer.tiny_config({data_dir!r}, total_steps=20), {workdir!r})
"""


def test_save_killed_midway_resumes_from_the_last_complete_one(
    data_dir, tmp_path, straight, capsys):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  repo = os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))))
  workdir = tmp_path / 'killed'
  proc = subprocess.run(
      [sys.executable, '-c', _KILLED_SAVE.format(
          repo=repo, data_dir=str(data_dir), workdir=str(workdir))],
      capture_output=True, text=True, timeout=600, check=False)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  left = sorted(os.listdir(workdir / 'checkpoints'))
  complete = [d for d in left if d.isdigit()]
  assert complete[-1] == '10', left
  assert any(d.startswith('20.orbax-checkpoint-tmp') for d in left), left
  capsys.readouterr()
  resumed = trainer.train_and_evaluate(tiny_config(data_dir, total_steps=20),
                                       workdir)
  out = capsys.readouterr().out
  assert 'Ignoring ' in out and '20.orbax-checkpoint-tmp' in out
  assert f'Resuming from checkpoint at step 10 in {workdir}' in out
  assert resumed['step'] == 20
  jax.tree.map(np.testing.assert_array_equal, restored_params(straight, 20),
               restored_params(workdir, 20))


def test_evaluation_during_training_keeps_the_best(data_dir, tmp_path,
                                                   capsys):
  # Validation = the training clips (memorisation is assertable); the final
  # test reads the same clips with the same single view, so it must repeat
  # exactly the best periodic result if it evaluates the best checkpoint.
  config = tiny_config(data_dir, total_steps=30, eval_every_steps=10,
                       best_metric='val/loss', best_mode='min',
                       test_checkpoint='best')
  config.data.val_split = 'train'
  result = trainer.train_and_evaluate(config, tmp_path / 'wd')
  out = capsys.readouterr().out
  val_lines = [l for l in out.splitlines() if '| val top1' in l]
  assert [l.split(' |')[0] for l in val_lines] == [
      'step 10', 'step 20', 'step 30']
  losses = {int(l.split()[1]): l.split('| loss ')[1].split()[0]
            for l in val_lines}
  best = min(losses, key=lambda k: float(losses[k]))
  assert os.listdir(tmp_path / 'wd' / 'best') == [str(best)]
  assert result['checkpoint'] == {'which': 'best', 'step': best,
                                  'metric': 'val/loss'}
  assert f"{result['loss']:.4f}" == losses[best]
  # Every progress line has a rate and an ETA, the first one included.
  progress = [l for l in out.splitlines() if l.startswith('step ')
              and 'steps/s' in l]
  assert progress and all('nan' not in l and 'ETA ?' not in l
                          for l in progress), progress


@pytest.mark.parametrize('overrides,needle', [
    (dict(eval_every_steps=5, best_metric='val/f1'),
     "best_metric='val/f1' is not a metric"),
    (dict(eval_every_steps=5, val_split='holdout'),
     "no validation split 'holdout'"),
    (dict(eval_every_steps=0, best_metric='val/top1'),
     'needs config.eval_every_steps'),
    (dict(test_checkpoint='best'), "test_checkpoint='best' needs"),
])
def test_periodic_evaluation_config_errors(data_dir, tmp_path, overrides,
                                           needle):
  overrides = dict(overrides)
  val_split = overrides.pop('val_split', None)
  config = tiny_config(data_dir, total_steps=1, **overrides)
  if val_split:
    config.data.val_split = val_split
  with pytest.raises(VidjaxError, match=needle):
    trainer.train_and_evaluate(config, tmp_path / 'wd')


def test_a_run_renders_the_embedded_dataset_once(tmp_path, monkeypatch):
  """Opening a dataset never writes it: one render per fresh data_dir."""
  from vidjax.data.builders import moving_shapes  # pylint: disable=g-import-not-at-top
  writes = []
  real = moving_shapes.MovingShapes._download_and_prepare

  def counted(self, *args, **kwargs):
    writes.append(self.data_dir)
    return real(self, *args, **kwargs)

  monkeypatch.setattr(moving_shapes.MovingShapes, '_download_and_prepare',
                      counted)
  fresh = tmp_path / 'tfds'
  for run in ('first', 'second'):
    trainer.train_and_evaluate(tiny_config(fresh, total_steps=0),
                               tmp_path / run, evaluate_untrained=True)
  assert len(writes) == 1, writes
