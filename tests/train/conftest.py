"""Fixtures shared by the trainer's test modules (one render, one run)."""
import pytest

from tests.train.test_trainer import tiny_config
from vidjax.train import trainer


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp('tfds')


@pytest.fixture(scope='session')
def straight(data_dir, tmp_path_factory):
  """The workdir of an uninterrupted 20-step run (checkpoints at 10, 20).

  Read-only: a test that changes it works on a copy (shutil.copytree).
  """
  workdir = tmp_path_factory.mktemp('straight')
  trainer.train_and_evaluate(tiny_config(data_dir, total_steps=20), workdir)
  return workdir
