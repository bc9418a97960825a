"""benchmarks/cpu_settings.py: the torch side's allocator, threads and
layout, found, set and reported (no timing)."""
import io
import json
import os
import subprocess
import sys

import pytest

from benchmarks import cpu_settings
from benchmarks import harness

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _touch(directory, *names):
  for name in names:
    (directory / name).write_bytes(b'')


def _sysfs(root, cores):
  """A fake /sys/devices/system/cpu: cpu i on physical core cores[i]."""
  for cpu, core in enumerate(cores):
    topology = root / f'cpu{cpu}' / 'topology'
    topology.mkdir(parents=True)
    (topology / 'physical_package_id').write_text('0\n')
    (topology / 'core_id').write_text(f'{core}\n')
  return str(root)


# Finding the allocator.


def test_find_library_takes_the_full_tcmalloc_only(tmp_path):
  _touch(tmp_path, 'libtcmalloc_minimal.so.4', 'libtcmalloc_debug.so.4')
  assert cpu_settings.find_library('tcmalloc', [str(tmp_path)]) is None
  _touch(tmp_path, 'libtcmalloc.so.4')
  assert cpu_settings.find_library('tcmalloc', [str(tmp_path)]) == str(
      tmp_path / 'libtcmalloc.so.4')
  assert cpu_settings.find_library('jemalloc', [str(tmp_path)]) is None


def test_a_missing_allocator_is_reported_not_fatal(tmp_path):
  for asked in ('tcmalloc', 'jemalloc', 'auto'):
    s = cpu_settings.torch_settings(allocator=asked, dirs=[str(tmp_path)],
                                    cpus=[0])
    assert s.allocator == 'glibc' and s.library is None
    assert 'not found' in s.note and str(tmp_path) in s.note
    env = s.env(base={})
    assert 'LD_PRELOAD' not in env and 'MALLOC_CONF' not in env
    assert 'not found' in s.line() and "glibc's malloc" in s.line()
    assert s.describe()['note'] == s.note


def test_glibc_asked_for_is_no_note(tmp_path):
  _touch(tmp_path, 'libtcmalloc.so.4')
  s = cpu_settings.torch_settings(allocator='glibc', dirs=[str(tmp_path)],
                                  cpus=[0])
  assert (s.allocator, s.library, s.note) == ('glibc', None, None)
  assert 'LD_PRELOAD' not in s.env(base={})


def test_auto_prefers_tcmalloc_then_jemalloc_with_its_conf(tmp_path):
  _touch(tmp_path, 'libjemalloc.so.2')
  s = cpu_settings.torch_settings(dirs=[str(tmp_path)], cpus=[0])
  assert s.allocator == 'jemalloc' and s.note is None
  env = s.env(base={'LD_PRELOAD': '/mine.so'})
  # Ahead of the user's own preloads, as torch.backends.xeon.run_cpu does.
  assert env['LD_PRELOAD'] == f'{tmp_path}/libjemalloc.so.2:/mine.so'
  assert env['MALLOC_CONF'] == (
      'oversize_threshold:1,background_thread:true,metadata_thp:auto')
  _touch(tmp_path, 'libtcmalloc.so.4')
  s = cpu_settings.torch_settings(dirs=[str(tmp_path)], cpus=[0])
  assert s.allocator == 'tcmalloc'
  env = s.env(base={})
  assert env['LD_PRELOAD'] == f'{tmp_path}/libtcmalloc.so.4'
  assert 'MALLOC_CONF' not in env


def test_unknown_settings():
  with pytest.raises(ValueError, match='unknown torch allocator'):
    cpu_settings.torch_settings(allocator='mimalloc')
  with pytest.raises(ValueError, match='unknown torch layout'):
    cpu_settings.torch_settings(layout='blocked')


# Threads.


def test_one_thread_per_physical_core(tmp_path):
  # Two cores with two hyperthreads each, numbered as Linux often does.
  sysfs = _sysfs(tmp_path, [0, 1, 0, 1])
  assert cpu_settings.physical_cpus([0, 1, 2, 3], sysfs) == [0, 1]
  assert cpu_settings.physical_cpus([1, 2], sysfs) == [1, 2]
  assert cpu_settings.physical_cpus([2, 3], sysfs) == [2, 3]
  # No topology: every CPU counts as a core.
  assert cpu_settings.physical_cpus([5, 7], str(tmp_path / 'none')) == [5, 7]


def test_pinned_threads_env_and_default(tmp_path):
  sysfs = _sysfs(tmp_path, [0, 0, 1, 1])
  s = cpu_settings.torch_settings(allocator='glibc', cpus=[0, 1, 2, 3],
                                  sysfs=sysfs)
  assert s.cpus == (0, 2)
  assert s.env(base={}) == {'OMP_NUM_THREADS': '2', 'OMP_SCHEDULE': 'STATIC',
                            'OMP_PROC_BIND': 'CLOSE',
                            'GOMP_CPU_AFFINITY': '0 2'}
  s = cpu_settings.torch_settings(allocator='glibc', threads='default',
                                  cpus=[0, 1, 2, 3], sysfs=sysfs)
  assert s.env(base={}) == {}
  assert "PyTorch's default threads" in s.line()


# In the side's process.


def test_loaded_allocator_reads_the_mapped_libraries(tmp_path):
  maps = tmp_path / 'maps'
  maps.write_text('7f0 r-xp 0 08:01 1 /usr/lib/libc.so.6\n')
  assert cpu_settings.loaded_allocator(str(maps)) == 'glibc'
  maps.write_text('7f0 r-xp 0 08:01 1 /usr/lib/libc.so.6\n'
                  '7f1 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/'
                  'libjemalloc.so.2\n')
  assert cpu_settings.loaded_allocator(str(maps)) == 'jemalloc'
  assert cpu_settings.loaded_allocator(str(tmp_path / 'gone')) == 'unknown'


def test_a_preloaded_allocator_is_really_loaded_in_the_side():
  found = cpu_settings.torch_settings(cpus=[0])
  if found.library is None:
    pytest.skip(f'no allocator library on this machine: {found.note}')
  code = ('from benchmarks import cpu_settings; '
          'print(cpu_settings.loaded_allocator())')
  proc = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True,
      check=True, timeout=120,
      env=harness.child_env({**found.env(), 'PYTHONPATH': REPO}))
  assert proc.stdout.split() == [found.allocator]
  proc = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True,
      check=True, timeout=120,
      env=harness.child_env({'LD_PRELOAD': None, 'PYTHONPATH': REPO}))
  assert proc.stdout.split() == ['glibc']


def test_memory_formats():
  torch = pytest.importorskip('torch')
  assert cpu_settings.memory_format('channels_last', 3) is (
      torch.channels_last_3d)
  assert cpu_settings.memory_format('channels_last', 2) is torch.channels_last
  assert cpu_settings.memory_format('contiguous', 3) is (
      torch.contiguous_format)
  x = torch.zeros(2, 3, 4, 5, 6)
  assert cpu_settings.format_of(x) == 'contiguous'
  assert cpu_settings.format_of(
      x.contiguous(memory_format=torch.channels_last_3d)) == 'channels_last_3d'
  assert cpu_settings.format_of(
      x[0].contiguous(memory_format=torch.channels_last)) == 'channels_last'
  assert cpu_settings.format_of(x.transpose(1, 2)) == 'strided'
  conv = torch.nn.Conv2d(3, 4, 3)
  assert cpu_settings.weights_format(conv) == 'contiguous'
  conv.to(memory_format=torch.channels_last)
  assert cpu_settings.weights_format(conv) == 'channels_last'


def test_side_report_names_what_the_side_runs_with(monkeypatch):
  monkeypatch.setenv('OMP_NUM_THREADS', '2')
  monkeypatch.delenv('GOMP_CPU_AFFINITY', raising=False)
  report = cpu_settings.side_report(2, memory_format='channels_last_3d')
  assert report['memory_format'] == 'channels_last_3d'
  assert report['threads'] == 2
  assert report['allocator'] == cpu_settings.loaded_allocator()
  assert report['env']['OMP_NUM_THREADS'] == '2'
  assert 'GOMP_CPU_AFFINITY' not in report['env']


# The harness reports a side's settings.


def test_the_harness_prints_and_keeps_each_sides_settings(tmp_path):
  record = {'step_s': [0.1], 'threads': 2,
            'settings': {'memory_format': 'channels_last_3d',
                         'allocator': 'tcmalloc',
                         'env': {'OMP_NUM_THREADS': '2'}}}
  code = f'print({json.dumps(json.dumps(record))})'
  out = io.StringIO()
  path = tmp_path / 'r.json'
  harness.measure([harness.Side('torch', [sys.executable, '-c', code])],
                  rounds=1, matmul=None, out=out, json_path=str(path))
  assert ('ran with: memory format channels_last_3d; allocator tcmalloc; '
          'env OMP_NUM_THREADS=2') in out.getvalue()
  saved = json.loads(path.read_text())['sides']['torch']['settings']
  assert saved == record['settings']


def test_run_side_records_settings():
  out = io.StringIO()
  record = harness.run_side(lambda: None, warmup=0, iters=1,
                            settings={'allocator': 'glibc'}, out=out)
  assert record['settings'] == {'allocator': 'glibc'}
  assert json.loads(out.getvalue())['settings'] == {'allocator': 'glibc'}


def test_settings_lines_under_a_table():
  def result(flags, allocator):
    return {'sides': {
        'vidjax': {'xla_flags': flags, 'settings': {'allocator': 'glibc'}},
        'torch': {'xla_flags': None, 'settings': {'allocator': allocator}}}}
  lines = harness.settings_lines([result('--a', 'tcmalloc'),
                                  result('--a', 'tcmalloc'),
                                  result('--b', 'jemalloc')])
  assert lines == ["vidjax ran with: XLA_FLAGS '--a'; allocator glibc",
                   "vidjax ran with: XLA_FLAGS '--b'; allocator glibc",
                   'torch ran with: allocator tcmalloc',
                   'torch ran with: allocator jemalloc']
