"""Everything a run reads is checked before compiling (vidjax/data/preflight).

Shards are tiny TFRecords written here (tests/data/records.py); nothing is
compiled: the checks are called directly.
"""
import json
import os
import types

import ml_collections
import numpy as np
import pytest

from configs import demo
from tests.data import records as R
from vidjax import config as config_lib
from vidjax.data import input_shards
from vidjax.data import pipeline
from vidjax.data import preflight
from vidjax.data import shard_check
from vidjax.data import sources
from vidjax.errors import VidjaxError


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  """train: 2 shards of labels 0..3; validation: 2 shards."""
  d = str(tmp_path_factory.mktemp('preflight'))
  R.write_shards(d, 'train', [R.record(v, 2, v % 4) for v in range(4)], 2)
  R.write_shards(d, 'validation', [R.record(v, 2, v % 4) for v in range(2)],
                 2)
  return d


def one_line(fn, *args, **kwargs) -> str:
  with pytest.raises(VidjaxError) as e:
    fn(*args, **kwargs)
  message = str(e.value)
  assert '\n' not in message, message
  return message


def run_config(data_dir, **data):
  """A training run of the demo's shape over `data_dir`'s TFRecords."""
  config = demo.get_config()
  config.data.update(R.data_config(f'{data_dir}/train-*',
                                   f'{data_dir}/validation-*').to_dict())
  config.data.update(data)
  config.eval_every_steps = 0
  config.best_metric = None
  config.batch_size = 4
  config_lib.validate(config)
  return config


def check(config, process_count=1):
  meta = pipeline.dataset_info(config.data)
  preflight.check(config, meta, process_count=process_count)


# ------------------------------------------------------------- One shard.


def test_a_sound_shard_passes_and_its_first_label_is_read(data_dir):
  path = f'{data_dir}/train-00001-of-00002'
  shard_check.check_file(path)
  assert shard_check.first_labels(path) == [1, 3]  # Records 1 and 3.
  assert shard_check.first_labels(path, 1) == [1]


def _copy(src, dst, transform=lambda raw: raw):
  with open(src, 'rb') as f:
    raw = f.read()
  with open(dst, 'wb') as f:
    f.write(transform(raw))
  return str(dst)


def test_each_fault_of_a_whole_shard_is_one_line(data_dir, tmp_path):
  sound = f'{data_dir}/train-00000-of-00002'
  missing = str(tmp_path / 'gone')
  assert one_line(shard_check.check_file, missing) == (
      f'shard {missing} does not exist')
  directory = tmp_path / 'dir'
  directory.mkdir()
  assert one_line(shard_check.check_file, str(directory)) == (
      f'shard {directory} is a directory, not a TFRecord file')
  fifo = str(tmp_path / 'fifo')
  os.mkfifo(fifo)  # Opening it would block the run forever.
  assert one_line(shard_check.check_file, fifo) == (
      f'shard {fifo} is not a regular file')
  empty = tmp_path / 'empty'
  empty.write_bytes(b'')
  assert one_line(shard_check.check_file, str(empty), 3) == (
      f'shard {empty} is empty (0 bytes); its metadata lists 3 records')
  shard_check.check_file(str(empty), 0)  # Nothing expected of it: fine.
  noise = tmp_path / 'noise'
  noise.write_bytes(np.random.default_rng(0).bytes(5000))
  assert one_line(shard_check.check_file, str(noise)) == (
      f'shard {noise}: no record in its 5000 bytes checks out (not a '
      'TFRecord file, a compressed one, or cut inside its first record)')
  # Damage at the start with sound records after it: the reader's business.
  def flip_first(raw):
    return bytes([raw[0] ^ 1]) + raw[1:]
  shard_check.check_file(_copy(sound, tmp_path / 'flipped', flip_first))
  assert shard_check.first_labels(str(tmp_path / 'flipped')) == []


def test_an_unreadable_shard_is_one_line(data_dir, monkeypatch):
  path = f'{data_dir}/train-00000-of-00002'
  real = shard_check.tf.io.gfile.GFile

  def denied(name, mode='r'):
    if name == path:
      raise PermissionError(13, 'Permission denied')
    return real(name, mode)

  # As root, chmod 000 does not stop a read: the open fails instead.
  monkeypatch.setattr(shard_check.tf.io.gfile, 'GFile', denied)
  assert one_line(shard_check.check_file, path) == (
      f'shard {path} cannot be read: Permission denied')


# ------------------------------------------------- Every split of the run.


def _fake_builder_source(files):
  """A builder-like source whose shards its metadata lists, as prepared
  datasets (Kinetics, moving shapes) have."""
  return types.SimpleNamespace(shard_files=lambda split: files[split])


def test_a_late_split_is_checked_before_training(data_dir, tmp_path,
                                                 monkeypatch):
  """The test split's shard replaced by a directory, or missing: found
  before the first step, not after training."""
  config = run_config(data_dir)
  config.data.eval_split = 'test'
  train = [(f'{data_dir}/train-0000{i}-of-00002', 2) for i in range(2)]
  broken = tmp_path / 'test-00000-of-00001'
  broken.mkdir()
  files = {'train': train, 'test': [(str(broken), 2)]}
  monkeypatch.setattr(sources, 'open_source',
                      lambda _: _fake_builder_source(files))
  meta = pipeline.DatasetMeta('fake', 4, tuple('abcd'),
                              {'train': 4, 'test': 2}, str(tmp_path))
  assert preflight.splits_read(config, meta) == ['train', 'test']
  assert one_line(preflight.check, config, meta, process_count=1) == (
      f'shard {broken} is a directory, not a TFRecord file')
  broken.rmdir()
  assert one_line(preflight.check, config, meta, process_count=1) == (
      f'shard {broken} does not exist')
  # Sound, but with garbage appended: read and counted at read time, so
  # the pre-flight passes.
  _copy(train[0][0], broken, lambda raw: raw + b'garbage')
  preflight.check(config, meta, process_count=1)


def test_num_classes_smaller_than_the_labels_is_one_line(data_dir, capfd):
  config = run_config(data_dir, num_classes=2)
  assert one_line(check, config) == (
      "2 of the 4 records sampled from split 'train' (the first 4 of each "
      'shard) have labels outside [0, 2) (config.data.num_classes=2), e.g. '
      f'record 1 of {data_dir}/train-00000-of-00002 has label 2; such '
      'records are skipped as bad_label')
  check(run_config(data_dir, num_classes=4))  # Enough classes: fine.
  # One label past the classes: a stray record, counted when read.
  check(run_config(data_dir, num_classes=3))
  assert capfd.readouterr().err == (
      "vidjax: WARNING: 1 of the 4 records sampled from split 'train' (the "
      'first 4 of each shard) have labels outside [0, 3) '
      '(config.data.num_classes=3), e.g. record 1 of '
      f'{data_dir}/train-00001-of-00002 has label 3; such records are '
      'skipped as bad_label\n')


def test_an_unlabelled_split_is_one_line(data_dir, tmp_path):
  R.write_shards(str(tmp_path), 'test',
                 [R.record(v, 2, -1) for v in range(2)], 1)
  config = run_config(data_dir, eval_pattern=f'{tmp_path}/test-*')
  assert one_line(check, config) == (
      "2 of the 2 records sampled from split 'validation' (the first 4 of "
      'each shard) have no label, e.g. record 0 of '
      f'{tmp_path}/test-00000-of-00001 has label -1: an unlabelled split '
      'cannot be trained or evaluated on')


def test_a_class_names_file_that_names_no_class(data_dir, tmp_path):
  names = tmp_path / 'names.txt'
  names.write_text('\n\n')
  config = run_config(data_dir, num_classes=None,
                      class_names_file=str(names))
  assert one_line(pipeline.dataset_info, config.data) == (
      f'config.data.class_names_file {names} lists no class names (one per '
      'line, line i = class i)')
  names.write_text('a\nb\na\nc\n')
  assert "lists 'a' twice" in one_line(pipeline.dataset_info, config.data)
  names.write_text('a\n\nb\nc\n')
  assert 'line 2 is blank' in one_line(pipeline.dataset_info, config.data)


# ------------------------------------------------- Settings read late.


@pytest.mark.parametrize('data,needle', [
    # Read when evaluation builds its pipeline: after training.
    (dict(eval_steps=('parse', 'sample_dense', 'decode', 'resise')),
     "unknown pipeline step(s) 'resise' in config.data.eval_steps"),
    (dict(train_steps=()), 'config.data.train_steps is empty'),
    (dict(normalization='imagnet'), "unknown normalization 'imagnet'"),
    (dict(horizontal_flip=True, flip_label_map={0: 7}),
     'config.data.flip_label_map: label 7 outside [0, 4) (4 classes)'),
    (dict(horizontal_flip=True, flip_label_map={'left': 1}),
     "config.data.flip_label_map={'left': 1}: invalid literal"),
    # Three crops without the step that makes them: evaluation, after
    # training, failed on its shape with a ValueError traceback.
    (dict(num_test_crops=3, eval_steps=('parse', 'sample_dense', 'decode',
                                        'resize', 'normalize')),
     "3 spatial crops per view (config.data.num_test_crops / "
     "config.val_views) need the step 'spatial_crops'"),
])
def test_pipeline_settings_fail_before_compiling(data_dir, data, needle):
  assert needle in one_line(check, run_config(data_dir, **data))


def test_input_streams_fit_the_processes_and_the_split(data_dir):
  config = run_config(data_dir, input_shards=2)
  check(config, process_count=2)
  assert one_line(check, config, process_count=4) == (
      'config.data.input_shards=2 must be a multiple of the 4 processes and '
      'divide config.batch_size=4')
  config = run_config(data_dir, input_shards=None)
  config.batch_size = 8
  # Eight processes, one stream each, for a split of four records.
  assert one_line(check, config, process_count=8) == (
      "split 'train' has 4 records, fewer than its 8 input streams "
      '(config.data.input_shards, one per process by default): some would '
      'read nothing')


def test_init_from_is_checked_before_the_model_is_built(data_dir, tmp_path):
  config = run_config(data_dir)
  config.init_from = str(tmp_path / 'no_such_dir')
  # Issue 28: a trained workdir or a checkpoint step is accepted too.
  assert one_line(check, config) == (
      f"config.init_from='{tmp_path}/no_such_dir': checkpoint "
      f'{tmp_path}/no_such_dir does not exist')
  config.init_from = str(tmp_path)
  assert one_line(check, config) == (
      f"config.init_from='{tmp_path}': {tmp_path} is neither a training "
      'workdir (no checkpoints/ inside), a checkpoint step, nor a python -m '
      'vidjax.convert output (no vidjax_model.json)')
  (tmp_path / 'vidjax_model.json').write_text(json.dumps(
      {'model': 'tsm_r50', 'num_classes': 400}))
  assert one_line(check, config) == (
      f"config.init_from='{tmp_path}' holds 'tsm_r50' weights but "
      "config.model_name is 's3dg'")


# ------------------------------------------------- At run time: bad_label.


def test_skipped_records_warn_once_when_they_pile_up(capfd):
  watch = input_shards.SkipWatch(every=10, rows=10, num_classes=2)
  bad_label = pipeline.COUNT_NAMES.index('bad_label')
  undecodable = pipeline.COUNT_NAMES.index('undecodable')
  counts = np.zeros(len(pipeline.COUNT_NAMES), np.int64)
  counts[-1] = 500  # Padded short videos are no skip.
  for _ in range(10):  # One stray record in 100: no warning.
    watch(counts)
  counts[bad_label] = 1
  for _ in range(10):
    watch(counts)
  assert not watch.warned and capfd.readouterr().err == ''
  counts[bad_label] = 3  # 2 of the next 100.
  for _ in range(10):
    watch(counts)
  counts[bad_label] = 60
  counts[undecodable] = 100
  for _ in range(20):
    watch(counts)
  assert watch.warned == {'bad_label', 'undecodable'}
  assert capfd.readouterr().err == (
      'vidjax: WARNING: 2 of the last 100 training records read (2%) are '
      'skipped as bad_label: their labels are outside [0, 2) '
      '(config.data.num_classes=2); is num_classes right?\n'
      'vidjax: WARNING: 100 of the last 100 training records read (100%) are '
      'skipped as undecodable: corrupt frames, or steps '
      '(config.data.train_steps) that do not make clips of '
      'config.data.crop_size\n')


def test_training_stream_warns_of_bad_labels(data_dir, capfd):
  config = ml_collections.ConfigDict({
      'data': R.data_config(f'{data_dir}/train-*', num_classes=2),
      'batch_size': 4, 'seed': 0, 'log_every_steps': 2, 'total_steps': 4})
  batches = input_shards.train_batches(config, 0)
  for _ in range(2):
    next(batches)
  err = capfd.readouterr().err
  # Labels 0..3 of 2 classes: half the records.
  assert ('vidjax: WARNING: 4 of the last 8 training records read (50%) '
          'are skipped as bad_label: their labels are outside [0, 2)') in err
