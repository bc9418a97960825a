"""benchmarks/predict.py's code path at tiny size: both sides build their
step and run it once (untimed), the runner builds the sides and the table.

Nothing is timed here: the lead runs the real measurement on a quiet
machine.
"""
import numpy as np
import pytest

from benchmarks import cpu_settings
from benchmarks import harness
from benchmarks import predict as bench


@pytest.fixture(scope='module')
def video(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('bench') / 'tiny.mp4')
  return bench.write_video(path, 'tiny', 1.0)


def side_args(video, side, *extra):
  return bench._parse([f'--side={side}', '--model=tiny', f'--video={video}',
                       '--batch=6', *extra])


def test_vidjax_side_predicts_the_file_once_per_step(monkeypatch, video):
  seen = {}

  def run_side(step, **kwargs):
    seen.update(kwargs, scores=step())

  monkeypatch.setattr(harness, 'run_side', run_side)
  bench.vidjax_side(side_args(video, 'vidjax'))
  assert seen['scores'].shape == (bench.NUM_CLASSES,)
  assert seen['scores'].sum() == pytest.approx(1.0)
  assert seen['info']['views'] == 6 and seen['info']['clip'] == '4x24^2'
  assert seen['settings']['jpeg_roundtrip'] is True
  assert (seen['warmup'], seen['iters']) == (1, 3)


def test_torch_side_makes_the_same_views_channels_last(monkeypatch, video):
  torch = pytest.importorskip('torch')
  pytest.importorskip('torchvision')

  class Stop(Exception):
    pass

  seen = {}

  def first_conv(self, x):
    seen['input'] = x
    raise Stop

  monkeypatch.setattr(torch.nn.Conv3d, 'forward', first_conv)
  step, contract, model, fmt = bench.torch_step(side_args(video, 'torch'))
  with pytest.raises(Stop):
    step()
  x = seen['input']
  assert x.shape == (6, 3, 4, 24, 24)  # The batch: 2 clips x 3 crops.
  assert x.is_contiguous(memory_format=torch.channels_last_3d)
  assert cpu_settings.weights_format(model) == 'channels_last_3d'
  # Normalised as the contract says: the mid-grey texture lands near 0.
  assert abs(float(x.mean())) < 1.0
  views = bench.torch_views(video, contract, fmt)
  assert views.shape == (6, 3, 4, 24, 24)
  # The three crops of a clip differ (left, centre, right).
  assert not torch.equal(views[0], views[2])


def test_runner_sides_and_table():
  args = bench._parse(['--models=demo,s3dg'])
  demo, s3dg = (bench.sides(args, n, '/tmp/v.mp4') for n in ('demo', 's3dg'))
  assert [s.name for s in demo] == ['vidjax']
  assert [s.name for s in s3dg] == ['vidjax', 'torch']
  assert s3dg[0].env['XLA_FLAGS'] == cpu_settings.BEST_XLA_FLAGS
  assert s3dg[1].env['XLA_FLAGS'] is None
  assert '--jpeg_roundtrip' in s3dg[0].argv
  side = lambda s, threads: {'median_s': s, 'threads': threads,
                             'info': {'views': 30}}
  result = {'sides': {'vidjax': side(2.0, 2), 'torch': side(3.0, 2)},
            'ratios': {'torch / vidjax': {'value': 1.5}}}
  lines = bench.table([('s3dg', result)])
  assert lines[1].split() == ['s3dg', '30', '2.000', '7.500', '3.000',
                              '5.000', '1.50']
  assert np.isclose(bench.clips_per_core(side(2.0, 2)), 7.5)
