"""A conversion carries its preprocessing contract: from --config, else the
reference code's evaluation protocol (vidjax/convert/protocol.py)."""
import json
import os

import pytest

from configs import kinetics400_timesformer
from tests.convert.test_output import run_cli
from tests.data.test_preflight import one_line
from vidjax.convert import protocol
from vidjax.data import transforms
from vidjax.inference import contract as contract_lib
from vidjax.models import create_model


def default(name, **options):
  model = create_model(name, num_classes=400, **options)
  return protocol.contract_for(name, model, {})


def test_torchvision_s3d_protocol():
  # torchvision's S3D_Weights.KINETICS400_V1: clip_len=128 at
  # frame_rate=15, clips_per_video=1; resize 256, centre crop 224.
  contract = default('s3d_torchvision')
  assert (contract.num_frames, contract.frame_stride, contract.crop_size,
          contract.eval_short_side, contract.num_views, contract.sampling,
          contract.fps, contract.short_side, contract.jpeg_quality) == (
              128, 1, 224, 256, 1, 'dense', 15.0, 'source', None)
  assert (contract.mean, contract.std) == transforms.NORMALIZATION['kinetics']
  assert contract.normalization == 'kinetics'
  assert (contract.num_classes, contract.class_names) == (400, None)


def test_tsm_protocol():
  # The official TSM test: 8 segments, 1 clip x 1 centre 224² of 256.
  for name in ('tsm_r50', 'tsn_r50', 'tsm_online_r50'):
    contract = default(name)
    assert (contract.model_name, contract.num_frames, contract.sampling,
            contract.crop_size, contract.eval_short_side, contract.num_views,
            contract.normalization, contract.fps, contract.short_side) == (
                name, 8, 'segments', 224, 256, 1, 'imagenet', None, None)


@pytest.mark.parametrize('name,frames,stride,crop', [
    ('timesformer', 8, 32, 224),
    ('timesformer_hr', 16, 16, 448),
    ('timesformer_l_joint', 96, 4, 224),
])
def test_timesformer_protocol(name, frames, stride, crop):
  contract = default(name)
  assert (contract.num_frames, contract.frame_stride, contract.crop_size,
          contract.num_test_clips, contract.num_test_crops,
          contract.normalization, contract.fps) == (
              frames, stride, crop, 1, 3, 'slowfast', None)


def test_a_config_gives_the_contract_and_the_options_hold():
  config = kinetics400_timesformer.get_config()
  model = create_model('timesformer', num_classes=5)
  names = ('a', 'b', 'c', 'd', 'e')
  contract = protocol.contract_for(
      'timesformer', model, {'qkv_bias': False}, config=config,
      class_names=names, preparation={'fps': 25.0, 'short_side': None})
  expected = contract_lib.from_config(
      config, num_classes=5, class_names=names,
      preparation={'fps': 25.0})
  assert contract == expected.replace(
      model_options={**expected.model_options, 'qkv_bias': False})
  assert one_line(protocol.contract_for, 's3d_torchvision', model, {},
                  config=config) == (
                      "--config names model 'timesformer' but the weights "
                      'are converted to --model=s3d_torchvision')
  assert one_line(protocol.contract_for, 'timesformer', model, {},
                  class_names=('a', 'b')) == (
                      'config timesformer: bad preprocessing contract: 2 '
                      'class names for 5 classes')


def test_cli_writes_the_contract(tmp_path):
  pytest.importorskip('transformers', reason='the tiny TimeSformer reference '
                      'model is built with transformers')
  # pylint: disable=g-import-not-at-top
  from tests.convert.test_timesformer import CLASSES
  from tests.convert.test_timesformer import hf_timesformer
  from tests.convert.test_timesformer import save_hf
  from vidjax.inference import loader
  source = save_hf(hf_timesformer(), tmp_path / 'hf')
  names = tmp_path / 'names.txt'
  names.write_text(''.join(f'action {i}\n' for i in range(CLASSES)))
  out = str(tmp_path / 'out')
  proc = run_cli('--model=timesformer', f'--torch={source}', f'--out={out}',
                 f'--class_names_file={names}', '--fps=12.5',
                 '--short_side=source')
  assert proc.returncode == 0, proc.stderr
  with open(os.path.join(out, 'vidjax_model.json')) as f:
    saved = json.load(f)['contract']
  loaded = loader.load(out)
  assert loaded.contract.to_dict() == saved
  assert (loaded.contract.fps, loaded.contract.short_side,
          loaded.contract.label(CLASSES - 1), loaded.contract.num_classes,
          loaded.contract.normalization) == (
              12.5, 'source', f'action {CLASSES - 1}', CLASSES, 'slowfast')
  # The model's structure read off the checkpoint is the contract's too.
  assert (loaded.contract.model_options['num_frames'],
          loaded.contract.num_frames) == (loaded.model.num_frames,) * 2
  proc = run_cli('--model=timesformer', f'--torch={source}',
                 f'--out={tmp_path}/bad', '--fps=fast')
  assert proc.returncode == 1
  assert proc.stderr.splitlines() == [
      "vidjax: error: --fps=fast: want a positive number or 'source'"]
