"""The preprocessing contract: JSON form, from every shipped config, the
dataset's preparation facts, and the one-line errors naming the flag."""
import importlib
import os

import pytest

from tests.inference import workdirs
from vidjax import VidjaxError
from vidjax.data import pipeline_steps
from vidjax.inference import contract as contract_lib

CONFIGS = sorted(
    name[:-3] for name in os.listdir(
        os.path.join(os.path.dirname(__file__), '..', '..', 'configs'))
    if name.endswith('.py') and not name.startswith('_'))
SHIPPED = [name for name in CONFIGS if hasattr(
    importlib.import_module(f'configs.{name}'), 'get_config')]


def tiny_contract(**preparation):
  return contract_lib.from_config(
      workdirs.tiny_config(), num_classes=5,
      class_names=workdirs.CLASS_NAMES,
      preparation=preparation or {'fps': 25.0, 'short_side': 32,
                                  'jpeg_quality': 90})


def test_json_round_trip():
  contract = tiny_contract()
  again = contract_lib.Contract.from_json(contract.to_json(), 'here')
  assert again == contract
  assert again.to_json() == contract.to_json()
  # Tuples stay tuples (hashable, comparable) after the trip.
  assert isinstance(again.class_names, tuple)
  assert isinstance(again.mean, tuple) and isinstance(again.eval_steps, tuple)
  # Nested options (a model's schedule) come back as tuples.
  nested = contract.replace(model_options={'schedule': (('sep', 'gate'),)})
  assert contract_lib.Contract.from_json(nested.to_json(), 'x') == nested
  source = tiny_contract(fps='source', short_side='source')
  assert contract_lib.Contract.from_json(source.to_json(), 'x') == source


def test_the_shipped_configs_are_listed():
  assert {'demo', 'kinetics400_s3dg', 'kinetics400_tsm', 'ssv2_timesformer',
          'kinetics400_tsm_online'} <= set(SHIPPED)
  assert 's3dg_common' not in SHIPPED  # No get_config: a shared base.


@pytest.mark.parametrize('name', SHIPPED)
def test_every_shipped_config_gives_a_valid_contract(name):
  config = importlib.import_module(f'configs.{name}').get_config()
  contract = contract_lib.from_config(config, num_classes=7,
                                      class_names=None)
  assert contract.model_name == config.model_name
  assert (contract.num_frames, contract.crop_size) == (
      config.data.num_frames, config.data.crop_size)
  assert contract.eval_steps == tuple(config.data.eval_steps)
  # The evaluation steps the contract's data_config resolves to are the
  # config's own: the same clips.
  assert ([n for n, _ in pipeline_steps.resolve(contract.data_config(),
                                                train=False)]
          == [n for n, _ in pipeline_steps.resolve(config.data,
                                                   train=False)])
  assert (contract.mean, contract.std) == tuple(
      tuple(float(v) for v in x)
      for x in pipeline_steps.normalization(config.data))
  assert contract_lib.Contract.from_json(contract.to_json(), name) == contract


def test_kinetics_s3dg_protocol():
  from configs import kinetics400_s3dg  # pylint: disable=g-import-not-at-top
  contract = contract_lib.from_config(
      kinetics400_s3dg.get_config(), num_classes=400, class_names=None,
      preparation=contract_lib.preparation_of(
          {'fps': 25.0, 'short_side': 256, 'jpeg_quality': 90}))
  assert (contract.num_frames, contract.frame_stride, contract.crop_size,
          contract.eval_short_side, contract.num_views,
          contract.normalization, contract.sampling) == (
              64, 1, 224, 256, 30, 'inception', 'dense')
  assert (contract.fps, contract.short_side, contract.jpeg_quality) == (
      25.0, 256, 90)
  assert contract.label(3) == 'class 3'  # No names: indices.


@pytest.mark.parametrize('metadata,facts', [
    # A raw-video builder (kinetics, ssv2, folders of videos).
    ({'fps': 25.0, 'short_side': 256, 'jpeg_quality': 90},
     {'fps': 25.0, 'short_side': 256, 'jpeg_quality': 90}),
    # fps None: the videos' own rate kept (ssv2's 'native').
    ({'fps': None, 'short_side': 256, 'jpeg_quality': 90},
     {'fps': 'source', 'short_side': 256, 'jpeg_quality': 90}),
    ({'fps': 12.0, 'short_side': None, 'jpeg_quality': 95},
     {'fps': 12.0, 'short_side': 'source', 'jpeg_quality': 95}),
    # An embedded dataset (moving_shapes): rendered at image_size.
    ({'num_frames': 16, 'image_size': 32, 'order_pairs': []},
     {'fps': 'source', 'short_side': 32, 'jpeg_quality': None}),
    # TFRecords someone else prepared: nothing known.
    (None, {'fps': None, 'short_side': None, 'jpeg_quality': None}),
    ({}, {'fps': None, 'short_side': None, 'jpeg_quality': None}),
])
def test_preparation_of(metadata, facts):
  assert contract_lib.preparation_of(metadata) == facts


def test_a_missing_field_names_its_flag():
  contract = contract_lib.from_config(workdirs.tiny_config(), num_classes=5,
                                      class_names=None)
  assert contract.missing(['fps', 'short_side', 'class_names',
                           'num_frames']) == ['fps', 'short_side',
                                              'class_names']
  for field, flag in (('fps', '--fps'), ('short_side', '--short_side'),
                      ('jpeg_quality', '--jpeg_quality'),
                      ('class_names', '--class_names_file')):
    with pytest.raises(VidjaxError) as e:
      contract.require([field], 'wd (step 3)')
    assert str(e.value) == (
        f"wd (step 3) has no '{field}' in its preprocessing contract "
        '(written before vidjax saved one, or not known when it was '
        f'trained); give it with {flag}=...')
  assert tiny_contract().require(['fps', 'short_side'], 'x') is not None


def test_from_dict_errors_name_the_field_or_the_config_flag():
  payload = tiny_contract().to_dict()
  # Preparation facts and names may be unknown: None, not an error.
  for field in ('fps', 'short_side', 'jpeg_quality', 'class_names'):
    partial = {k: v for k, v in payload.items() if k != field}
    assert getattr(contract_lib.Contract.from_dict(partial, 'w'),
                   field) is None
  # The clip settings come with the training config.
  partial = {k: v for k, v in payload.items() if k != 'num_frames'}
  with pytest.raises(VidjaxError) as e:
    contract_lib.Contract.from_dict(partial, 'wd')
  assert str(e.value) == ("wd: the preprocessing contract lacks "
                          "'num_frames'; give the training config with "
                          '--config=...')
  with pytest.raises(VidjaxError, match=r"^wd: preprocessing contract "
                     r"version 2 is not one this vidjax reads \(1\)$"):
    contract_lib.Contract.from_dict({**payload, 'version': 2}, 'wd')
  with pytest.raises(VidjaxError, match=r'^wd: bad preprocessing contract: '
                     r"num_frames=0; fps='fast'; 3 class names for 5 "
                     r'classes$'):
    contract_lib.Contract.from_dict(
        {**payload, 'num_frames': 0, 'fps': 'fast',
         'class_names': ['a', 'b', 'c']}, 'wd')
  with pytest.raises(VidjaxError, match=r'^wd: the preprocessing contract '
                     r'is not JSON: '):
    contract_lib.Contract.from_json('{"version": 1', 'wd')
