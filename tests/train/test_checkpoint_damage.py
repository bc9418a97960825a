"""Damaged checkpoints: resume from the newest intact step, set the rest aside.

Unit tests of vidjax.train.checkpoint on a small state (no model, nothing to
compile); tests/train/test_silent_results.py runs the trainer through it.
"""
import errno
import os
import resource
import shutil
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidjax import VidjaxError
from vidjax.train import checkpoint

STATE = {'params': {'w': jnp.arange(2000, dtype=jnp.float32),
                    'b': jnp.ones((3, 4), jnp.float32)},
         'step': jnp.zeros((), jnp.int32)}
ABSTRACT = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        STATE)


def state_at(step):
  return jax.tree.map(lambda x: x + step, STATE)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A workdir with complete checkpoints at steps 10 and 20."""
  workdir = tmp_path_factory.mktemp('saved')
  manager = manager_of(workdir)
  for step in (10, 20):
    checkpoint.save(manager, step, state_at(step))
  manager.close()
  return workdir


def manager_of(workdir, keep=3):
  return checkpoint.make_manager(str(workdir), save_every_steps=10, keep=keep)


def copy_of(saved, tmp_path):
  workdir = tmp_path / 'wd'
  shutil.copytree(saved, workdir)
  return workdir


def data_files(step_dir):
  """The array data files of a step (orbax's OCDBT 'd/' files), largest
  first: the largest holds `w`."""
  files = [os.path.join(root, f) for root, _, names in os.walk(step_dir)
           for f in names if os.path.basename(root) == 'd']
  return sorted(files, key=os.path.getsize, reverse=True)


def _delete_item_metadata(step_dir):
  os.remove(step_dir / 'default' / '_METADATA')


def _truncate_data(step_dir):
  big = data_files(step_dir)[0]
  os.truncate(big, os.path.getsize(big) // 2)


def _delete_data(step_dir):
  os.remove(data_files(step_dir)[0])


def _empty(step_dir):
  shutil.rmtree(step_dir)
  step_dir.mkdir()


def _delete_item(step_dir):
  shutil.rmtree(step_dir / 'default')


def _truncate_manifest(step_dir):
  os.truncate(step_dir / 'default' / 'manifest.ocdbt', 10)


def _garbage_array_metadata(step_dir):
  (step_dir / 'default' / '_METADATA').write_text('{not json')


DAMAGE = {
    'item metadata deleted': (_delete_item_metadata, 'FileNotFoundError'),
    'data file truncated': (_truncate_data, 'Encountered error while '
                            'reading array'),
    'data file deleted': (_delete_data, 'Encountered error while reading'),
    'step directory emptied': (_empty, 'its directory is empty'),
    'item directory deleted': (_delete_item, 'ValueError'),
    'manifest truncated': (_truncate_manifest, 'DATA_LOSS'),
    'array metadata garbage': (_garbage_array_metadata, 'Error'),
}


@pytest.mark.parametrize('kind', sorted(DAMAGE))
def test_damaged_latest_falls_back_and_is_set_aside(saved, tmp_path, kind):
  damage, reason = DAMAGE[kind]
  workdir = copy_of(saved, tmp_path)
  damage(workdir / 'checkpoints' / '20')
  lines = []
  manager = manager_of(workdir)
  step, state = checkpoint.restore_newest_intact(manager, ABSTRACT,
                                                 say=lines.append)
  assert step == 10
  jax.tree.map(np.testing.assert_array_equal, state, state_at(10))
  aside = workdir / checkpoint.SET_ASIDE / '20'
  assert len(lines) == 1, lines
  assert lines[0].startswith('Skipped the checkpoint at step 20: ')
  assert reason in lines[0] and lines[0].endswith(f'; moved it to {aside}')
  assert '\n' not in lines[0]
  # Set aside, not deleted; out of orbax's sight.
  assert aside.is_dir()
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10']
  assert manager.all_steps() == [10]
  # Saving step 20 again works, and keep_checkpoints ignores the set-aside.
  checkpoint.save(manager, 20, state_at(21))
  manager.close()
  assert aside.is_dir()
  again = manager_of(workdir)
  step, state = checkpoint.restore_newest_intact(again, ABSTRACT,
                                                 say=lines.append)
  assert step == 20 and len(lines) == 1
  jax.tree.map(np.testing.assert_array_equal, state, state_at(21))
  again.close()


def test_a_second_damage_of_the_same_step_gets_its_own_name(saved, tmp_path):
  workdir = copy_of(saved, tmp_path)
  (workdir / checkpoint.SET_ASIDE / '20').mkdir(parents=True)
  _empty(workdir / 'checkpoints' / '20')
  lines = []
  step, _ = checkpoint.restore_newest_intact(manager_of(workdir), ABSTRACT,
                                             say=lines.append)
  assert step == 10
  assert lines[0].endswith(str(workdir / checkpoint.SET_ASIDE / '20.1'))


def test_a_file_named_like_a_step_is_set_aside(saved, tmp_path):
  # orbax lists only directories; a file "30" would make the save of step
  # 30 fail when it renames its temporary directory onto it.
  workdir = copy_of(saved, tmp_path)
  (workdir / 'checkpoints' / '30').write_text('not a checkpoint')
  lines = []
  manager = manager_of(workdir)
  step, _ = checkpoint.restore_newest_intact(manager, ABSTRACT,
                                             say=lines.append)
  assert step == 20
  assert lines == [f'Skipped {workdir}/checkpoints/30: not a directory, so '
                   'not a checkpoint; moved it to '
                   f'{workdir}/{checkpoint.SET_ASIDE}/30']
  checkpoint.save(manager, 30, state_at(30))
  assert manager.all_steps() == [10, 20, 30]
  manager.close()


def test_a_garbled_step_metadata_file_still_restores(saved, tmp_path):
  # _CHECKPOINT_METADATA (timestamps) is not needed to restore: orbax logs
  # it and restores, and so does the resume; nothing is moved.
  workdir = copy_of(saved, tmp_path)
  (workdir / 'checkpoints' / '20' / '_CHECKPOINT_METADATA').write_text('{x')
  lines = []
  step, state = checkpoint.restore_newest_intact(manager_of(workdir),
                                                 ABSTRACT, say=lines.append)
  assert step == 20 and lines == []
  jax.tree.map(np.testing.assert_array_equal, state, state_at(20))


@pytest.mark.skipif(os.geteuid() == 0, reason='root reads any file')
def test_unreadable_files_fall_back(saved, tmp_path):
  workdir = copy_of(saved, tmp_path)
  for root, _, names in os.walk(workdir / 'checkpoints' / '20'):
    for name in names:
      os.chmod(os.path.join(root, name), 0)
  lines = []
  step, _ = checkpoint.restore_newest_intact(manager_of(workdir), ABSTRACT,
                                             say=lines.append)
  assert step == 10 and lines[0].startswith('Skipped the checkpoint at step '
                                            '20: ')


def test_no_intact_step_is_one_line_and_moves_nothing(saved, tmp_path):
  workdir = copy_of(saved, tmp_path)
  _empty(workdir / 'checkpoints' / '20')
  _delete_item_metadata(workdir / 'checkpoints' / '10')
  with pytest.raises(VidjaxError) as error:
    checkpoint.restore_newest_intact(manager_of(workdir), ABSTRACT)
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'no checkpoint in {workdir}/checkpoints '
                            'restores (step 20: its directory is empty; '
                            'step 10: FileNotFoundError: ')
  assert message.endswith('none was moved or deleted: to start afresh, use '
                          'another --workdir')
  # A rerun meets the same steps and says the same: no silent fresh start.
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '20']
  assert not (workdir / checkpoint.SET_ASIDE).exists()


def test_a_step_another_process_cannot_restore_is_skipped(saved, tmp_path,
                                                          monkeypatch):
  # Every process must take the same step: one that fails anywhere is
  # skipped everywhere (the all-gather, simulated: the first step fails on
  # "another process").
  answers = iter([False, True])
  monkeypatch.setattr(checkpoint, '_everywhere',
                      lambda ok: ok and next(answers))
  workdir = copy_of(saved, tmp_path)
  lines = []
  step, _ = checkpoint.restore_newest_intact(manager_of(workdir), ABSTRACT,
                                             say=lines.append)
  assert step == 10
  assert lines[0].startswith('Skipped the checkpoint at step 20: another '
                             'process could not restore it;')


@pytest.mark.parametrize('change,needle', [
    (lambda s: {**s, 'params': {**s['params'], 'b': jnp.ones((3, 5))}},
     'params/b is (3, 4) float32 in the checkpoint, (3, 5) float32 in this '
     'run'),
    (lambda s: {**s, 'params': {**s['params'], 'extra': jnp.ones(2)}},
     'params/extra (2,) float32 is not in the checkpoint'),
    (lambda s: {**s, 'params': {'w': s['params']['w']}},
     "the checkpoint's params/b is not in this run's state"),
])
def test_another_state_tree_is_one_line_not_damage(saved, tmp_path, change,
                                                   needle):
  workdir = copy_of(saved, tmp_path)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          change(STATE))
  with pytest.raises(VidjaxError) as error:
    checkpoint.restore_newest_intact(manager_of(workdir), abstract)
  assert str(error.value) == (
      f'the checkpoint at step 20 in {workdir}/checkpoints holds another '
      f'state than this run builds: {needle}: use another --workdir, or the '
      'config that wrote it')
  assert sorted(os.listdir(workdir / 'checkpoints')) == ['10', '20']


def test_keep_one_checkpoint_keeps_the_latest(tmp_path):
  manager = manager_of(tmp_path, keep=1)
  for step in (10, 20, 30):
    checkpoint.save(manager, step, state_at(step), force=step == 30)
  manager.close()
  assert os.listdir(tmp_path / 'checkpoints') == ['30']
  step, _ = checkpoint.restore_newest_intact(manager_of(tmp_path, keep=1),
                                             ABSTRACT)
  assert step == 30


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last(
    saved, tmp_path):
  # A real orbax save into a file-size limit (RLIMIT_FSIZE, SIGXFSZ
  # ignored): tensorstore's write fails with EFBIG, as on a full disk.
  workdir = copy_of(saved, tmp_path)
  manager = manager_of(workdir)
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  resource.setrlimit(resource.RLIMIT_FSIZE, (4000, hard))
  try:
    with pytest.raises(VidjaxError) as error:
      checkpoint.save(manager, 30, state_at(30))
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, handler)
  assert str(error.value) == (
      f'saving the checkpoint of step 30 in {workdir}/checkpoints failed: '
      f'{os.strerror(errno.EFBIG)} (errno {errno.EFBIG}); the checkpoint at '
      'step 20 is intact: free space (or fix the storage) and rerun the same '
      'command to resume')
  manager.close()
  left = checkpoint.incomplete_saves(str(workdir))
  assert [os.path.basename(p).split('.')[0] for p in left] == ['30']
  # The next run ignores the temporary directory, resumes from 20, saves 30.
  again = manager_of(workdir)
  step, state = checkpoint.restore_newest_intact(again, ABSTRACT)
  assert step == 20
  jax.tree.map(np.testing.assert_array_equal, state, state_at(20))
  checkpoint.save(again, 30, state_at(30))
  assert again.all_steps() == [10, 20, 30]
  again.close()


def test_storage_errors_are_told_apart_from_bugs():
  assert checkpoint.storage_error(OSError(errno.ENOSPC, 'x')) == (
      f'{os.strerror(errno.ENOSPC)} (errno {errno.ENOSPC})')
  assert checkpoint.storage_error(ValueError(
      "Failed to write 9 bytes to file 17: No space left on device "
      "[os_error_code='28']")).endswith('(errno 28)')
  assert checkpoint.storage_error(ValueError('a shape mismatch')) is None
  assert checkpoint.storage_error(OSError(errno.ENOENT, 'gone')) is None


def test_a_damaged_best_is_set_aside_and_said(tmp_path):
  manager = checkpoint.make_best_manager(str(tmp_path), 'val/loss', 'min')
  checkpoint.save_scored(manager, 10, state_at(10), {'val/loss': 1.0})
  _empty(tmp_path / 'best' / '10')
  lines = []
  state, why = checkpoint.restore_best(manager, 10, ABSTRACT,
                                       say=lines.append)
  assert state is None
  assert why == ('the best checkpoint (step 10) does not restore: its '
                 'directory is empty')
  assert lines == ['The best checkpoint at step 10 does not restore: its '
                   'directory is empty; moved it to '
                   f'{tmp_path}/{checkpoint.SET_ASIDE}/best-10']
  assert manager.best_step() is None
  manager.close()


def test_best_checkpoints_after_the_resumed_step_are_set_aside(tmp_path):
  # After a fall back from 30 to 20, a best of step 30 is from a future
  # the run no longer has; orbax would keep ranking it.
  manager = checkpoint.make_best_manager(str(tmp_path), 'val/loss', 'min')
  checkpoint.save_scored(manager, 30, state_at(30), {'val/loss': 1.0})
  lines = []
  checkpoint.set_aside_best_after(manager, 20, say=lines.append)
  assert manager.all_steps() == [] and manager.best_step() is None
  assert lines == ['Set aside the best checkpoint at step 30: written after '
                   'step 20, which this run resumes from; moved it to '
                   f'{tmp_path}/{checkpoint.SET_ASIDE}/best-30']
  checkpoint.save_scored(manager, 30, state_at(31), {'val/loss': 2.0})
  assert manager.best_step() == 30
  manager.close()
