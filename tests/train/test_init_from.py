"""Merging other weights (a conversion, a trained workdir, a step) into a
fresh model's variables."""
import os

import flax
import numpy as np
import pytest

from tests.data.test_preflight import one_line
from tests.inference import workdirs
from vidjax import VidjaxError
from vidjax.train import init_from


def _variables(num_classes, conv_scale=1.0):
  return {
      'params': {
          'Conv2d_1a_7x7': {'conv': {'kernel': conv_scale * np.ones((3, 2))}},
          'Logits': {'kernel': np.zeros((4, num_classes)),
                     'bias': np.zeros((num_classes,))},
      },
      'batch_stats': {'Conv2d_1a_7x7': {'bn': {'mean': conv_scale
                                               * np.ones((2,))}}},
  }


def test_takes_everything_when_shapes_agree():
  merged, kept = init_from.merge(_variables(5), _variables(5, 3.0), 'src', head='Logits')
  assert kept == []
  np.testing.assert_array_equal(
      merged['params']['Conv2d_1a_7x7']['conv']['kernel'], 3 * np.ones((3, 2)))
  np.testing.assert_array_equal(
      merged['batch_stats']['Conv2d_1a_7x7']['bn']['mean'], [3.0, 3.0])


def test_keeps_a_fresh_head_for_a_new_class_count():
  fresh = _variables(13)
  merged, kept = init_from.merge(fresh, _variables(400, 3.0), 'src', head='Logits')
  assert sorted(kept) == ['params/Logits/bias', 'params/Logits/kernel']
  assert merged['params']['Logits']['kernel'].shape == (4, 13)
  np.testing.assert_array_equal(
      merged['params']['Conv2d_1a_7x7']['conv']['kernel'], 3 * np.ones((3, 2)))


def test_backbone_mismatch_missing_and_unused_are_errors():
  loaded = _variables(5)
  loaded['params']['Conv2d_1a_7x7']['conv']['kernel'] = np.ones((3, 3))
  loaded['params']['Extra'] = {'w': np.ones(2)}
  del loaded['batch_stats']['Conv2d_1a_7x7']
  with pytest.raises(VidjaxError) as err:
    init_from.merge(_variables(5), loaded, 'src', head='Logits')
  message = str(err.value)
  assert 'params/Conv2d_1a_7x7/conv/kernel has shape [3, 3]' in message
  assert 'batch_stats/Conv2d_1a_7x7/bn/mean missing' in message
  assert 'params/Extra/w unused' in message


def test_the_head_name_comes_from_the_model_spec():
  # A TSM's classifier is 'fc': with another head name a new class count is
  # a mismatch, not a fresh head.
  from vidjax.models import registry  # pylint: disable=g-import-not-at-top
  assert registry.get_spec('tsm_r50').head == 'fc'
  assert registry.get_spec('s3dg').head == 'Logits'
  fresh, loaded = _variables(13), _variables(400, 3.0)
  for variables in (fresh, loaded):
    variables['params']['fc'] = variables['params'].pop('Logits')
  _, kept = init_from.merge(fresh, loaded, 'src', head='fc')
  assert sorted(kept) == ['params/fc/bias', 'params/fc/kernel']
  with pytest.raises(VidjaxError, match='params/fc/kernel has shape'):
    init_from.merge(fresh, loaded, 'src', head='Logits')


def test_a_fine_tuning_start_from_a_trained_workdir(tmp_path):
  # Issue 28: a trained workdir (its latest checkpoint) or one of its steps
  # works as init_from, as configs/ssv2_s3dg.py promises; 5 classes there,
  # 13 here: the head stays fresh, everything else is the workdir's.
  config = workdirs.tiny_config()
  _, saved = workdirs.write_workdir(tmp_path / 'k400', config, steps=(4, 8))
  model, fresh = workdirs.random_variables(config, num_classes=13, seed=7)
  for source, step in ((tmp_path / 'k400', 8),
                       (tmp_path / 'k400' / 'checkpoints' / '4', 4)):
    merged, kept = init_from.load(str(source), 's3dg', fresh, model=model)
    assert sorted(kept) == ['params/Logits/bias', 'params/Logits/kernel']
    merged = flax.traverse_util.flatten_dict(merged)
    expected = flax.traverse_util.flatten_dict(saved[step])
    initial = flax.traverse_util.flatten_dict(fresh)
    assert set(merged) == set(expected)
    for path, value in merged.items():
      want = initial[path] if '/'.join(path) in kept else expected[path]
      assert value.dtype == want.dtype, path
      np.testing.assert_array_equal(value, want, err_msg=str(path))
  other = workdirs.tiny_config('i3d')
  model, fresh = workdirs.random_variables(other, num_classes=13)
  assert one_line(init_from.load, str(tmp_path / 'k400'), 'i3d', fresh,
                  model=model) == (
                      f"init_from {tmp_path}/k400 (step 8) holds 's3dg' "
                      "weights but config.model_name is 'i3d'")
  assert one_line(init_from.load, str(tmp_path / 'none'), 's3dg',
                  fresh) == (
                      f'init_from: checkpoint {tmp_path}/none does not exist')
  assert not os.path.exists(tmp_path / 'none')
