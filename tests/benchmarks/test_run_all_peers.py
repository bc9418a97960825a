"""benchmarks/run_all_peers.py: its command lines, resuming and summary,
with stand-in runs (no benchmark runs, nothing timed)."""
import io
import json
import os
import subprocess
import sys

import pytest

from benchmarks import cpu_settings
from benchmarks import harness
from benchmarks import run_all_peers as peers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _result(kind, vidjax_s, peer_s, peer='torch'):
  """One comparison as harness.measure_grid returns it."""
  def side(median_s, settings):
    return {'median_s': median_s, 'xla_flags': None, 'settings': settings}
  return {'setting': 'ynn', 'kind': kind, 'rounds': 2,
          'machine': {'matmul_gflops': 300.0},
          'sides': {'vidjax': side(vidjax_s, {'allocator': 'glibc'}),
                    peer: side(peer_s, {'memory_format': 'channels_last_3d',
                                        'allocator': 'tcmalloc'})},
          'ratios': {f'{peer} / vidjax': {'value': peer_s / vidjax_s,
                                          'per_round': [0.9, 1.1]}}}


class _Runner:
  """Stands in for subprocess.run: writes the --json, or fails for the
  models in `fail`."""

  def __init__(self, fail=()):
    self.calls, self.fail = [], fail

  def __call__(self, argv, stdout, stderr, check):
    assert stderr == subprocess.STDOUT and not check
    model = next(m for m, (script, _, _) in peers.MODELS.items()
                 if argv[1].endswith(script))
    self.calls.append((model, argv))
    stdout.write(f'running {model}\n')
    if model in self.fail:
      return subprocess.CompletedProcess(argv, 1)
    path = next(a for a in argv if a.startswith('--json='))[len('--json='):]
    peer = peers.MODELS[model][1]
    with open(path, 'w', encoding='utf-8') as f:
      json.dump({'comparisons': [_result('infer', 0.5, 0.4, peer),
                                 _result('train', 2.0, 1.8, peer)]}, f)
    return subprocess.CompletedProcess(argv, 0)


def test_command_runs_the_best_settings_on_both_sides(tmp_path):
  args = peers._parse([f'--out={tmp_path}', '--rounds=1', '--iters=1',
                       '--warmup=0'])
  argv = peers.command('s3d', args, '/x/s3d.json.partial')
  assert argv[0] == sys.executable
  assert argv[1] == os.path.join(REPO, 'benchmarks', 's3d_vs_torchvision.py')
  assert {'--settings=ynn', '--kinds=infer,train', '--rounds=1', '--iters=1',
          '--warmup=0', '--torch-layout=channels_last',
          '--torch-allocator=auto', '--torch-threads=pinned',
          '--json=/x/s3d.json.partial'} == set(argv[2:])
  # Each script takes every flag the driver passes it.
  for model, (script, _, _) in peers.MODELS.items():
    module = {'s3d': 's3d_vs_torchvision', 'tsm': 'tsm_vs_torch',
              'timesformer': 'timesformer_vs_hf'}[model]
    parse = __import__(f'benchmarks.{module}', fromlist=['_parse'])._parse
    parsed = parse(peers.command(model, args, 'x.json')[2:])
    assert parsed.settings == 'ynn' and parsed.rounds == 1
    assert parsed.json == 'x.json' and script.startswith(module)
  # Without --iters and --warmup, each script keeps its own.
  args = peers._parse([f'--out={tmp_path}'])
  assert not any(a.startswith(('--iters', '--warmup'))
                 for a in peers.command('tsm', args, 'x'))


def test_runs_every_model_in_order_then_resumes(tmp_path):
  args = peers._parse([f'--out={tmp_path}', '--rounds=1'])
  runner = _Runner(fail=('tsm',))
  out = io.StringIO()
  assert peers.run_all(args, runner, out) == ['tsm']
  assert [m for m, _ in runner.calls] == ['s3d', 'tsm', 'timesformer']
  assert sorted(os.listdir(tmp_path)) == [
      's3d.json', 's3d.log', 'timesformer.json', 'timesformer.log',
      'tsm.log']
  assert (tmp_path / 'tsm.log').read_text() == 'running tsm\n'
  assert 'tsm: FAILED (exit 1)' in out.getvalue()
  # Again: only the failed model runs.
  runner = _Runner()
  out = io.StringIO()
  assert peers.run_all(args, runner, out) == []
  assert [m for m, _ in runner.calls] == ['tsm']
  assert 's3d: done already' in out.getvalue()
  assert 'timesformer: done already' in out.getvalue()


def test_a_run_that_writes_no_json_is_not_done(tmp_path):
  args = peers._parse([f'--out={tmp_path}', '--models=s3d'])

  def crashed(argv, stdout, stderr, check):
    del stdout, stderr, check
    return subprocess.CompletedProcess(argv, 0)
  assert peers.run_all(args, crashed, io.StringIO()) == ['s3d']
  assert not (tmp_path / 's3d.json').exists()


def test_summary_rows(tmp_path):
  args = peers._parse([f'--out={tmp_path}', '--models=s3d,timesformer'])
  peers.run_all(args, _Runner(), io.StringIO())
  out = io.StringIO()
  peers.summary(str(tmp_path), out)
  text = out.getvalue()
  row = '| s3d | infer | 500.0 | 400.0 | 0.80 | 0.90–1.10 | 2 | 300 |'
  assert row in text
  assert '| timesformer | train | 2000.0 | 1800.0 | 0.90 |' in text
  assert '| tsm | (not run yet) |' in text
  assert ('s3d: torch ran with: memory format channels_last_3d; '
          'allocator tcmalloc') in text
  assert 'timesformer: hf ran with: ' in text
  assert 's3d: vidjax ran with: allocator glibc' in text


def test_bad_flags():
  with pytest.raises(harness.VidjaxError, match='--rounds must be >= 1'):
    peers._parse(['--out=x', '--rounds=0'])
  with pytest.raises(harness.VidjaxError, match='unknown --models i3d'):
    peers.run_all(peers._parse(['--out=x', '--models=s3d,i3d']), _Runner())


def test_settings_default_to_the_best():
  args = peers._parse(['--out=x'])
  assert cpu_settings.torch_settings_from(args).layout == 'channels_last'
  assert peers.SETTING == 'ynn'
