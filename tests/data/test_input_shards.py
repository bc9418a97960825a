"""This process's rows of each global training batch, from input shards."""
import ml_collections
import numpy as np
import pytest

from tests.data import records as R
from vidjax.data import input_shards
from vidjax.data import pipeline
from vidjax.errors import VidjaxError

BATCH = 4


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('input_shards'))
  R.write_shards(d, 'clips', [R.record(v, 12, v % 3) for v in range(8)], 4)
  return d


def _config(data_dir, shards):
  pattern = f'{data_dir}/clips-*'
  return ml_collections.ConfigDict({
      'data': R.data_config(pattern, pattern, num_classes=3,
                            input_shards=shards),
      'batch_size': BATCH, 'seed': 3, 'log_every_steps': 100,
      'total_steps': 10})


def test_two_input_shards_in_one_process_concatenate_their_streams(
    data_dir):
  """What two processes would each read (build_dataset as process i of 2),
  concatenated row-wise, with the input counts summed."""
  config = _config(data_dir, 2)
  start = 1  # Resumes mid-run: the streams start at the same step.
  halves = [pipeline.build_dataset(
      config.data, 'train', train=True, batch_size=BATCH // 2, seed=3,
      start_step=start, process_index=i, process_count=2
  ).as_numpy_iterator() for i in range(2)]
  batches = input_shards.train_batches(config, start)
  for _ in range(3):
    got = next(batches)
    parts = [next(h) for h in halves]
    for key in got:
      if key == 'counts':
        np.testing.assert_array_equal(
            got[key], parts[0][key] + parts[1][key])
      else:
        np.testing.assert_array_equal(
            got[key], np.concatenate([parts[0][key], parts[1][key]]))
    assert len(got['label']) == BATCH


def test_one_input_shard_is_the_plain_stream(data_dir):
  config = _config(data_dir, None)
  expected = pipeline.build_dataset(
      config.data, 'train', train=True, batch_size=BATCH, seed=3,
      start_step=0, process_index=0, process_count=1).as_numpy_iterator()
  got = next(input_shards.train_batches(config, 0))
  want = next(expected)
  assert got.keys() == want.keys()
  for key in got:
    np.testing.assert_array_equal(got[key], want[key])


def test_input_shards_must_divide_the_batch(data_dir):
  with pytest.raises(VidjaxError, match='input_shards=3'):
    next(input_shards.train_batches(_config(data_dir, 3), 0))
