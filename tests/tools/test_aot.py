"""The AOT tool: a tiny S3D-G train step compiled by libtpu for a TPU
topology on this CPU, and the pure parts (HLO collectives, roofline, batch
search) on hand-made inputs."""
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip('libtpu', reason='the AOT tool needs libtpu: '
                    'pip install "jax[tpu]"')

from configs import demo  # pylint: disable=g-import-not-at-top
from vidjax.errors import VidjaxError
from vidjax import kernels as kernels_lib
from vidjax.kernels import selection
from vidjax.parallel import mesh as mesh_lib
from vidjax.tools.aot import collectives
from vidjax.tools.aot import command
from vidjax.tools.aot import compiling
from vidjax.tools.aot import report as report_lib
from vidjax.tools.aot import topology as topology_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GiB = topology_lib.GiB
TOPOLOGY = 'v5e:2x2'  # 4 chips: the smallest multi-chip slice libtpu knows.


def tiny_config(mesh=None):
  config = demo.get_config()
  config.model.depth_multiplier = 0.125
  config.model.min_depth = 8
  config.data.num_frames = 8
  config.data.crop_size = 32
  config.batch_size = 8
  if mesh:
    config.mesh = mesh
  return config


@pytest.fixture(scope='module')
def topology():
  return topology_lib.load_topology(TOPOLOGY)


@pytest.fixture(scope='module')
def data_parallel(topology):
  return compiling.compile_step(tiny_config(), topology, dtype='bfloat16')


@pytest.fixture(scope='module')
def time_sharded(topology):
  return compiling.compile_step(tiny_config({'data': -1, 'time': 2}),
                                topology, dtype='bfloat16')


def test_topology_devices(topology):
  assert len(topology.devices) == 4
  assert topology.chip is topology_lib.CHIPS['v5e']
  assert topology.devices[0].device_kind == 'TPU v5 lite'


def test_across_slices_only_the_data_axis_crosses_dcn():
  """Two v5e 2x2 slices: mesh_lib.make_mesh builds the hybrid mesh."""
  devices = topology_lib.load_topology(TOPOLOGY, num_slices=2).devices
  assert sorted({d.slice_index for d in devices}) == [0, 1]
  mesh = mesh_lib.make_mesh({'data': -1, 'time': 2}, devices)
  assert dict(mesh.shape) == {'data': 4, 'time': 2}
  slices = np.vectorize(lambda d: d.slice_index)(mesh.devices)
  # The time axis stays inside a slice (its halos ride on ICI); the data
  # axis's first half is one slice, its second half the other.
  np.testing.assert_array_equal(slices, [[0, 0], [0, 0], [1, 1], [1, 1]])
  with pytest.raises(VidjaxError, match='multiple of the 2 TPU slices'):
    mesh_lib.make_mesh({'data': 1, 'time': 8}, devices)


def test_data_parallel_step_fits(data_parallel):
  r = data_parallel
  assert (r.mesh, r.global_batch, r.per_chip_batch) == (
      {'data': 4, 'time': 1}, 8, 2)
  # The config says 'auto': what a TPU gets, not this CPU host.
  assert (r.lowering, r.remat, r.dtype, r.num_classes) == (
      kernels_lib.default_kernels('tpu'), 'none', 'bfloat16', 13)
  assert r.arguments > 0 and r.outputs > 0 and r.generated_code > 0
  # The donated state comes back in place.
  assert 0 < r.aliased <= min(r.arguments, r.outputs)
  assert r.total == (r.arguments + r.outputs - r.aliased + r.temporaries
                     + r.generated_code)
  assert r.fits and 0 < r.total < r.hbm_capacity == 16 * GiB
  assert r.flops > 0 and r.bytes_accessed > 0
  # Gradients (and BN statistics) are summed over the data axis.
  assert r.collectives['all-reduce']['count'] > 0
  assert r.collectives['all-reduce']['bytes'] > 0
  assert 'collective-permute' not in r.collectives
  text = report_lib.format_report([r])
  for needle in ('HBM per chip', 'fits', 'yes', 'all-reduce', 'ESTIMATE',
                 'Cloud TPU docs', '2 per chip x 4'):
    assert needle in text, text


def test_time_sharded_step_exchanges_halos(time_sharded):
  r = time_sharded
  assert r.mesh == {'data': 2, 'time': 2} and r.per_chip_batch == 4
  assert r.fits
  permutes = r.collectives['collective-permute']
  assert permutes['count'] > 0 and permutes['bytes'] > 0
  assert r.collectives['all-reduce']['count'] > 0


@pytest.mark.parametrize('table,expected', [
    ({'cpu': 'custom', 'tpu': 'plain'}, 'plain'),
    ({'cpu': 'plain', 'tpu': 'custom'}, 'custom'),
])
def test_lowering_default_is_the_tpus_not_the_hosts(monkeypatch, table,
                                                    expected):
  # 'auto' would pick by the platform running the tool: the CPU here.
  monkeypatch.setattr(selection, 'DEFAULT_KERNELS', table)
  config = tiny_config()
  assert compiling.resolve_options(config) == (expected, 'none', 'float32')
  config.model.kernels = 'custom'
  config.model.remat = 'block'
  assert compiling.resolve_options(config) == ('custom', 'block', 'float32')
  assert compiling.resolve_options(config, 'plain', 'full', 'bfloat16') == (
      'plain', 'full', 'bfloat16')
  # --lowering keeps its former values as aliases.
  assert compiling.resolve_options(config, 'xla', 'full', 'bfloat16') == (
      'plain', 'full', 'bfloat16')
  assert compiling.resolve_options(config, 'cpu')[0] == 'custom'


def test_batch_not_divisible(topology):
  with pytest.raises(VidjaxError, match='not divisible by the data axis'):
    compiling.compile_step(tiny_config(), topology, batch_size=6)


def test_unknown_topology_is_one_line():
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.run(
      [sys.executable, '-m', 'vidjax.tools.aot', '--config=configs/demo.py',
       '--topology=v9z:2x2'], cwd=REPO, env=env, capture_output=True,
      text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1, proc.stderr
  assert lines[0].startswith(
      "vidjax: error: libtpu does not know topology 'v9z:2x2' (known: "), lines
  assert 'v5e:4x4' in lines[0]


def test_layout_libtpu_rejects():
  with pytest.raises(VidjaxError, match="does not know topology 'v5e:3x3'"):
    topology_lib.load_topology('v5e:3x3')


def test_no_libtpu(monkeypatch):
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(
      importlib.util, 'find_spec',
      lambda name, *a: None if name == 'libtpu' else find_spec(name, *a))
  with pytest.raises(VidjaxError, match=r'pip install "jax\[tpu\]==0\.'):
    topology_lib.load_topology(TOPOLOGY)


def test_default_num_classes():
  config = tiny_config()
  assert compiling.default_num_classes(config) == 13
  for name, n in (('kinetics400', 400), ('ssv2', 174),
                  ('kinetics700', 700), ('kinetics600', 600)):
    config.data.name = name
    assert compiling.default_num_classes(config) == n
  config.data.num_classes = 7
  assert compiling.default_num_classes(config) == 7
  config.data.num_classes = None
  config.data.name = 'tfrecord'
  with pytest.raises(VidjaxError, match='--num_classes'):
    compiling.default_num_classes(config)


HLO = """\
HloModule jit_train_step, is_scheduled=true

%wrapped_reduce_scatter (p: f32[64]) -> f32[16] {
  %p = f32[64]{0} parameter(0)
  ROOT %reduce-scatter.1 = f32[16]{0:T(128)} reduce-scatter(f32[64]{0} %p), channel_id=9, replica_groups={{0,1,2,3}}, dimensions={0}, to_apply=%add
}

ENTRY %main (a: f32[8,128], b: bf16[4,1,32,32,3]) -> f32[8,128] {
  %a = f32[8,128]{1,0:T(8,128)} parameter(0)
  %all-reduce.3 = f32[8,128]{1,0:T(8,128)} all-reduce(f32[8,128]{1,0} %a), channel_id=1, replica_groups={{0,1},{2,3}}, to_apply=%add
  %all-reduce.7 = (f32[8]{0:T(128)S(1)}, f32[8]{0:T(128)S(1)}, /*index=2*/bf16[3,7,7,3,8]{4,2,3,1,0:T(8,128)(2,1)S(1)}) all-reduce(%x, %y, %z), channel_id=2, replica_groups=mesh['axis_0'=4] {'axis_0'}, to_apply=%add
  %all-reduce-start.1 = (f32[16]{0}, f32[4]{0}) all-reduce-start(%u, %v), channel_id=3, to_apply=%add
  %all-reduce-done.1 = (f32[16]{0}, f32[4]{0}) all-reduce-done(%all-reduce-start.1)
  %collective-permute-start.3 = (bf16[4,1,32,32,3]{3,2,4,1,0:T(8,128)(2,1)S(1)}, bf16[4,1,32,32,3]{3,2,4,1,0:T(8,128)(2,1)S(1)}, u32[]{:S(2)}, u32[]{:S(2)}) collective-permute-start(%slice.404), channel_id=4, source_target_pairs={{1,0},{3,2}}
  %collective-permute-done.3 = bf16[4,1,32,32,3]{3,2,4,1,0:T(8,128)(2,1)S(1)} collective-permute-done(%collective-permute-start.3)
  %collective-permute.2 = s8[10]{0} collective-permute(s8[10]{0} %q), channel_id=5, source_target_pairs={{0,1}}
  %all-gather-start = (f32[4,128]{1,0}, f32[16,128]{1,0}) all-gather-start(f32[4,128]{1,0} %g), channel_id=6, replica_groups={{0,1,2,3}}, dimensions={0}
  %all-gather-done = f32[16,128]{1,0} all-gather-done(%all-gather-start)
  %reduce-scatter-start = ((f32[64]{0}), f32[16]{0}) async-start(f32[64]{0} %r), calls=%wrapped_reduce_scatter
  %reduce-scatter-done = f32[16]{0} async-done(%reduce-scatter-start)
  %all-to-all = (f32[2,8]{1,0}, f32[2,8]{1,0}) all-to-all(%s, %t), channel_id=7, replica_groups={{0,1}}
  %fusion.1 = f32[8,128]{1,0} fusion(%all-reduce.3, %all-gather-done), kind=kLoop, calls=%fused_computation, metadata={op_name="jit(train_step)/all-reduce"}
  ROOT %tuple = (f32[8,128]{1,0}) tuple(%fusion.1)
}
"""


def test_parse_collectives_by_hand():
  got = collectives.parse_collectives(HLO)
  assert got == {
      # 8x128 f32 + (2 x f32[8] + bf16[3,7,7,3,8]) + the async (f32[16],
      # f32[4]) tuple.
      'all-reduce': {'count': 3, 'async': 1,
                     'bytes': 4096 + (32 + 32 + 2 * 3528) + (64 + 16)},
      'all-gather': {'count': 1, 'async': 1, 'bytes': 16 * 128 * 4},
      # Wrapped in async-start: its inner instruction counts, once.
      'reduce-scatter': {'count': 1, 'async': 0, 'bytes': 64},
      # -start: the result (2nd tuple element), not operand + result +
      # context.
      'collective-permute': {'count': 2, 'async': 1,
                             'bytes': 4 * 32 * 32 * 3 * 2 + 10},
      'all-to-all': {'count': 1, 'async': 0, 'bytes': 2 * 64},
  }
  assert collectives.parse_collectives('ENTRY %m () -> f32[] {\n}\n') == {}


def test_parse_shape():
  assert collectives.parse_shape('f32[8,16]{1,0:T(8,128)}') == 512
  assert collectives.parse_shape(
      '(f32[2]{0}, (bf16[4]{0:T(128)}, u32[]))') == [8, [8, 4]]
  assert collectives.parse_shape('pred[3]') == 3
  assert collectives.parse_shape('s4[5]') == 3


def fake_report(**kw):
  base = dict(topology='v5e:4x4', chip='v5e', num_chips=16,
              mesh={'data': 16, 'time': 1}, global_batch=64,
              per_chip_batch=4, clip_shape=(64, 224, 224, 3),
              num_classes=400, lowering='plain', remat='none',
              dtype='bfloat16', hbm_capacity=16 * GiB, fits=True)
  base.update(kw)
  return report_lib.Report(**base)


def test_roofline_by_hand():
  chip = topology_lib.CHIPS['v5e']
  assert (chip.peak_flops, chip.hbm_bandwidth) == (197e12, 819e9)
  # 1.97e12 flops / 197e12 = 10 ms; 4.095e9 bytes / 819e9 = 5 ms.
  r = report_lib.roofline(
      fake_report(flops=1.97e12, bytes_accessed=4.095e9), chip)
  assert r['compute_seconds'] == pytest.approx(0.010)
  assert r['memory_seconds'] == pytest.approx(0.005)
  assert r['seconds'] == pytest.approx(0.010) and r['bound'] == 'compute'
  assert r['clips_per_second'] == pytest.approx(6400)
  r = report_lib.roofline(
      fake_report(flops=1.97e11, bytes_accessed=8.19e9), 'v5e')
  assert r['seconds'] == pytest.approx(0.010) and r['bound'] == 'memory'
  assert report_lib.roofline(fake_report(), chip) == {}


def test_oom_message_figures():
  # libtpu 0.0.42's message (S3D-G at 64 clips per v5e chip).
  message = ('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory '
             'required for HLO temporaries (24.59G) exceeds available HBM '
             '(15.75G).')
  used, limit = compiling._oom_figures(message)
  assert used == int(24.59 * GiB) and limit == int(15.75 * GiB)
  message = ('RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out '
             'of memory in memory space hbm. Used 20.50G of 15.75G hbm. '
             'Exceeded hbm capacity by 4.75G.')
  used, limit = compiling._oom_figures(message)
  assert used == int(20.5 * GiB) and limit == int(15.75 * GiB)
  assert compiling._oom_figures('something else') == (None, None)
  report = fake_report(fits=False, oom=message, oom_used=used,
                       oom_limit=limit)
  text = report_lib.format_report([report])
  assert 'NO, does not fit' in text and 'needs 20.50 GiB of 15.75 GiB' in text


def test_find_max_batch_doubles_then_bisects(monkeypatch, topology):
  tried = []

  def fake_compile(config, topo, *, batch_size, **options):
    per_chip = batch_size // 4
    tried.append(per_chip)
    return fake_report(global_batch=batch_size, per_chip_batch=per_chip,
                       fits=per_chip <= 5, total=per_chip * GiB,
                       compile_seconds=1.0)

  monkeypatch.setattr(compiling, 'compile_step', fake_compile)
  lines = []
  best, probes = compiling.find_max_batch(tiny_config(), topology,
                                          progress=lines.append)
  assert tried == [1, 2, 4, 8, 6, 5]
  assert best.per_chip_batch == 5 and best.global_batch == 20
  assert len(probes) == len(lines) == 6
  assert 'probe 4: 8 per chip (global 32)' in lines[3]
  assert 'does not fit' in lines[3] and 's per compile' in lines[3]

  # From a starting batch: up from it, or from 1 if it does not fit.
  tried.clear()
  best, _ = compiling.find_max_batch(tiny_config(), topology, start=4,
                               progress=None)
  assert tried == [4, 8, 6, 5] and best.per_chip_batch == 5
  tried.clear()
  best, _ = compiling.find_max_batch(tiny_config(), topology, start=8,
                               progress=None)
  assert tried == [8, 1, 2, 4, 6, 5] and best.per_chip_batch == 5

  tried.clear()
  monkeypatch.setattr(compiling, 'compile_step', lambda *a, batch_size, **k: (
      tried.append(batch_size) or fake_report(fits=False)))
  best, probes = compiling.find_max_batch(tiny_config(), topology,
                                          progress=None)
  assert best is None and tried == [4]


def test_parse_mesh():
  assert command.parse_mesh('data=-1,time=2') == {'data': -1, 'time': 2}
  with pytest.raises(VidjaxError):
    command.parse_mesh('data:2')

