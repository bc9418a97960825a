"""The trainer's results are what they say: resumes after damage, another
model, nothing to train, a best that never was, the whole run's curves, a
full disk. Runs share the `straight` workdir (tests/train/conftest.py) and
work on copies of it."""
import errno
import json
import os
import shutil

import jax
import numpy as np
import pytest

from vidjax import VidjaxError
from vidjax import main as vidjax_main
from vidjax.train import checkpoint
from vidjax.train import history as history_lib
from vidjax.train import trainer
from vidjax.train import workdir as workdir_lib
from tests.train.test_checkpoint_damage import data_files
from tests.train.test_trainer import history_entries
from tests.train.test_trainer import restored_params
from tests.train.test_trainer import tiny_config


def copy_of(straight, tmp_path):
  workdir = tmp_path / 'wd'
  shutil.copytree(straight, workdir)
  return workdir


def test_damaged_latest_resumes_from_the_intact_step(data_dir, straight,
                                                     tmp_path, capsys):
  # Step 20's data files cut in half: the run falls back to 10 and
  # trains 11-20 again, to the uninterrupted run's parameters and curves,
  # keeping one checkpoint (keep_checkpoints=1 keeps the latest).
  workdir = copy_of(straight, tmp_path)
  # (Cutting only the largest one did not damage it: the restored state
  # was equal to the original's to the bit.)
  for path in data_files(workdir / 'checkpoints' / '20'):
    os.truncate(path, os.path.getsize(path) // 2)
  capsys.readouterr()
  result = trainer.train_and_evaluate(
      tiny_config(data_dir, total_steps=20, keep_checkpoints=1), workdir)
  out = capsys.readouterr().out.splitlines()
  aside = workdir / checkpoint.SET_ASIDE / '20'
  skipped = [l for l in out if l.startswith('Skipped')]
  assert len(skipped) == 1 and skipped[0].startswith(
      'Skipped the checkpoint at step 20: ValueError: OUT_OF_RANGE: ')
  assert skipped[0].endswith(f'; moved it to {aside}')
  assert f'Resuming from checkpoint at step 10 in {workdir}' in out
  assert result['step'] == 20
  jax.tree.map(np.testing.assert_array_equal, restored_params(straight, 20),
               restored_params(workdir, 20))
  assert os.listdir(workdir / 'checkpoints') == ['20']
  assert aside.is_dir()
  # The curves: steps 5 and 10 from before, 15 and 20 trained again; not
  # the lost run's 15 and 20 twice.
  assert [e['step'] for e in history_entries(workdir)] == [5, 10, 15, 20]
  assert history_entries(workdir) == history_entries(straight)
  assert result['curves'] == f'{workdir}/curves.png'

  # total_steps=0 on it: evaluates that checkpoint and says so.
  again = trainer.train_and_evaluate(
      tiny_config(data_dir, total_steps=0, keep_checkpoints=1), workdir)
  out = capsys.readouterr().out
  assert ('No training (total_steps=0): evaluating the checkpoint at step 20 '
          f'in {workdir}/checkpoints') in out
  assert again['step'] == 20 and again['top1'] == result['top1']


def test_another_model_is_one_line_and_keeps_the_evidence(data_dir, straight,
                                                          tmp_path):
  workdir = copy_of(straight, tmp_path)
  before = (workdir / 'config.json').read_bytes()
  config = tiny_config(data_dir, total_steps=20)
  config.model_name = 'i2d'
  with pytest.raises(VidjaxError) as error:
    trainer.train_and_evaluate(config, workdir)
  assert str(error.value) == (
      f'the checkpoint at step 20 in {workdir}/checkpoints was written by '
      'model s3dg (bn_momentum=0.9, depth_multiplier=0.125, dropout_rate=0.0, '
      "min_depth=8); "
      "this run's config has model i2d: use another --workdir or the same "
      'model')
  assert (workdir / 'config.json').read_bytes() == before


def test_another_shape_names_the_first_leaf(data_dir, straight, tmp_path):
  workdir = copy_of(straight, tmp_path)
  before = (workdir / 'config.json').read_bytes()
  config = tiny_config(data_dir, total_steps=20)
  config.model.min_depth = 16  # Every conv twice as wide.
  with pytest.raises(VidjaxError) as error:
    trainer.train_and_evaluate(config, workdir)
  assert str(error.value) == (
      f'the checkpoint at step 20 in {workdir}/checkpoints holds another '
      'state than this run builds: params/Conv2d_1a_7x7/bn/bias is (8,) '
      'float32 in the checkpoint, (16,) float32 in this run: use another '
      '--workdir, or the config that wrote it')
  assert (workdir / 'config.json').read_bytes() == before
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '20']


def test_total_steps_zero_evaluates_nothing_random(data_dir, tmp_path):
  workdir = tmp_path / 'wd'
  with pytest.raises(VidjaxError) as error:
    trainer.train_and_evaluate(tiny_config(data_dir, total_steps=0), workdir)
  assert str(error.value) == (
      'config.total_steps=0 trains nothing, and there is neither a '
      f'checkpoint in {workdir}/checkpoints nor a config.init_from: only a '
      'random model would be evaluated; set config.total_steps > 0, '
      'config.init_from, or a --workdir with a checkpoint')
  assert os.listdir(workdir) == []


def test_total_steps_zero_says_what_it_evaluates(data_dir):
  # The function that decides, without a run: a fresh head (init_from with
  # another class count) would make the evaluation a random one.
  config = tiny_config(data_dir, total_steps=0, init_from='/pre')
  with pytest.raises(VidjaxError) as error:
    trainer._no_training_line(config, 0, ['params/Logits/bias',
                                          'params/Logits/kernel'], None)
  assert str(error.value) == (
      'config.total_steps=0 would evaluate the weights of /pre, but '
      'params/Logits/bias, params/Logits/kernel are freshly initialised '
      '(another class count): its predictions are random; train '
      '(config.total_steps > 0) first')
  assert trainer._no_training_line(config, 0, [], None) == (
      'No training (total_steps=0): evaluating the weights of /pre')
  config = tiny_config(data_dir, total_steps=0)
  assert trainer._no_training_line(config, 0, [], None) == (
      'No training (total_steps=0): evaluating the untrained model (random '
      'initialisation, seed 0)')


def best_config(data_dir, total_steps):
  config = tiny_config(data_dir, total_steps=total_steps, eval_every_steps=10,
                       best_metric='val/loss', best_mode='min',
                       test_checkpoint='best')
  config.data.val_split = 'train'
  return config


def test_a_best_that_no_validation_can_make_is_an_error(data_dir, tmp_path):
  with pytest.raises(VidjaxError) as error:
    trainer.train_and_evaluate(best_config(data_dir, 5), tmp_path / 'wd')
  assert str(error.value) == (
      "config.test_checkpoint='best', but no validation runs in steps 1..5 "
      f'(config.eval_every_steps=10) and {tmp_path}/wd/best holds no best '
      "checkpoint: there would be no best to test; lower "
      "config.eval_every_steps or test 'last'")


def test_a_resumed_step_that_missed_its_validation_gets_it(
    data_dir, straight, tmp_path, capsys):
  # As if killed after the save of step 20 and before its validation: the
  # resume validates step 20 before anything else, so the best exists.
  workdir = copy_of(straight, tmp_path)
  capsys.readouterr()
  result = trainer.train_and_evaluate(best_config(data_dir, 20), workdir)
  out = capsys.readouterr().out
  assert [l.split(' |')[0] for l in out.splitlines()
          if '| val top1' in l] == ['step 20']
  assert result['checkpoint'] == {'which': 'best', 'step': 20,
                                  'metric': 'val/loss'}
  assert os.listdir(workdir / 'best') == ['20']
  assert history_entries(workdir)[-1]['step'] == 20
  assert 'val/loss' in history_entries(workdir)[-1]


def test_the_final_message_names_only_files_that_exist(tmp_path):
  results = {'split': 'test', 'step': 0, 'top1': 0.5, 'top5': 1.0,
             'num_examples': 2, 'num_examples_in_split': 2,
             'workdir': str(tmp_path), 'checkpoints': None, 'curves': None}
  message = vidjax_main.final_message(results)
  assert 'curves' not in message and 'Checkpoints' not in message
  assert message.splitlines()[-1] == (
      f'Results: {tmp_path}/eval_results.json')
  results.update(checkpoints=f'{tmp_path}/checkpoints',
                 curves=f'{tmp_path}/curves.png')
  message = vidjax_main.final_message(results)
  assert f'Checkpoints: {tmp_path}/checkpoints' in message
  assert message.endswith(f', curves: {tmp_path}/curves.png')


def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path,
                                                         monkeypatch):
  path = str(tmp_path / 'eval_results.json')
  workdir_lib.write_json(path, {'top1': 0.5})

  def full(self, data):
    with open(self, 'wb') as f:
      f.write(data[:3])  # Part of it, then the disk is full.
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(workdir_lib.epath.Path, 'write_bytes', full)
  with pytest.raises(VidjaxError) as error:
    workdir_lib.write_json(path, {'top1': 0.75})
  assert str(error.value) == (
      f'could not write {path}: {os.strerror(errno.ENOSPC)}; its previous '
      'version, if any, is unchanged')
  assert json.loads(open(path).read()) == {'top1': 0.5}
  assert os.listdir(tmp_path) == ['eval_results.json']  # No .tmp left.
  # The curves and the history go through the same write.
  from vidjax.train import report  # pylint: disable=g-import-not-at-top
  with pytest.raises(VidjaxError, match='could not write .*curves.png: No '
                     'space left on device'):
    report.plot_curves([{'step': 1, 'train/loss': 1.0, 'train/top1': 0.1}],
                       str(tmp_path / 'curves.png'))
  with pytest.raises(VidjaxError, match='could not write .*history.json'):
    history_lib.History(str(tmp_path / 'history.json')).write()
  assert os.listdir(tmp_path) == ['eval_results.json']


def test_history_resume_drops_the_lost_future(tmp_path):
  path = str(tmp_path / history_lib.FILENAME)
  saved = history_lib.History(path, [
      {'step': 5, 'train/loss': 2.0}, {'step': 10, 'train/loss': 1.5},
      {'step': 10, 'val/loss': 1.7}, {'step': 15, 'train/loss': 1.0}])
  saved.write(open_interval=(12, [{'loss': 8.0, 'count': 4.0}]),
              saved_steps=[10, 12])
  resumed = history_lib.History.resume(str(tmp_path), 10)
  assert [e['step'] for e in resumed.entries] == [5, 10, 10]
  assert resumed.has(10, 'val/') and not resumed.has(5, 'val/')
  assert resumed.interval_at(10) == []
  at_12 = history_lib.History.resume(str(tmp_path), 12)
  assert at_12.interval_at(12) == [{'loss': 8.0, 'count': 4.0}]
  assert history_lib.History.resume(str(tmp_path), 0).entries == []


def test_an_unreadable_history_is_one_line(tmp_path):
  (tmp_path / history_lib.FILENAME).write_text('{"entries": [')
  lines = []
  resumed = history_lib.History.resume(str(tmp_path), 10, say=lines.append)
  assert resumed.entries == []
  assert len(lines) == 1 and lines[0].startswith(
      f'{tmp_path}/history.json is unreadable (')
  assert lines[0].endswith('); the curves start at step 10')
