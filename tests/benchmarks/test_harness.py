"""The benchmark harness: its arithmetic on hand-computed numbers, and its
process handling with trivial sides (no frameworks, no timing asserted)."""
import io
import json
import os
import sys

import pytest

from benchmarks import harness
from benchmarks import s3d_vs_torchvision as s3d

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def side(name, code, env=None):
  return harness.Side(name, [sys.executable, '-c', code], env or {})


def fixed(step_s, **extra):
  """A side that prints a fixed result line (after some chatter)."""
  record = {'setup_s': 0.5, 'warmup_s': [2.0, 0.1], 'step_s': step_s,
            'threads': 3, 'xla_flags': None, **extra}
  return f'print("loading..."); print({json.dumps(json.dumps(record))})'


def measure(sides, **kwargs):
  kwargs.setdefault('rounds', 2)
  out = io.StringIO()
  result = harness.measure(sides, matmul=kwargs.pop('matmul', None), out=out,
                           **kwargs)
  return result, out.getvalue()


# Arithmetic.


def test_median():
  assert harness.median([3.0, 1.0, 2.0]) == 2.0
  assert harness.median([4.0, 1.0, 3.0, 2.0]) == 2.5
  with pytest.raises(ValueError):
    harness.median([])


def test_spread():
  s = harness.spread([1.0, 1.2, 1.1])
  assert s['min'] == 1.0 and s['max'] == 1.2
  assert s['rel'] == pytest.approx(0.2 / 1.1)
  assert harness.spread([2.0])['rel'] == 0.0


def test_ratio_and_eta():
  assert harness.ratio(3.0, 2.0) == 1.5
  with pytest.raises(ValueError):
    harness.ratio(1.0, 0.0)
  assert harness.eta_s(30.0, 1, 3) == 60.0
  assert harness.eta_s(30.0, 3, 3) == 0.0


def test_summarize():
  records = [{'setup_s': 1.0, 'warmup_s': [5.0, 1.0], 'step_s': [1., 2., 3.],
              'threads': 2, 'xla_flags': '--x'},
             {'setup_s': 2.0, 'warmup_s': [7.0, 1.0],
              'step_s': [2., 4., 6., 8.], 'threads': 2, 'xla_flags': '--x'}]
  s = harness.summarize(records)
  assert s['median_s'] == 3.0        # of 1 2 2 3 4 6 8
  assert s['steps'] == 7
  assert s['round_medians_s'] == [2.0, 5.0]
  assert s['spread_s'] == {'min': 2.0, 'max': 5.0, 'rel': 3.0 / 3.5}
  assert s['setup_median_s'] == 1.5
  assert s['warmup_total_median_s'] == 7.0   # of 6 and 8
  assert s['first_warmup_median_s'] == 6.0   # of 5 and 7
  assert s['threads'] == 2 and s['xla_flags'] == '--x'


def test_compare_against_the_first_side():
  summaries = {'A': {'median_s': 2.0, 'round_medians_s': [2.0, 4.0]},
               'B': {'median_s': 3.0, 'round_medians_s': [3.0, 2.0]}}
  r = harness.compare(summaries, ['A', 'B'])
  assert r == {'B / A': {'value': 1.5, 'per_round': [1.5, 0.5],
                         'meaning': '> 1: A is faster'}}


def test_child_env():
  env = harness.child_env({'Y': None, 'Z': '3', 'W': None},
                          base={'X': '1', 'Y': '2'})
  assert env == {'X': '1', 'Z': '3'}


def test_parse_result():
  line = json.dumps({'step_s': [0.1]})
  assert harness.parse_result('A', f'hi\n{line}\nbye at exit\n') == {
      'step_s': [0.1]}
  with pytest.raises(harness.SideError, match="'A' printed no JSON.*bye"):
    harness.parse_result('A', '{"other": 1}\nbye\n')
  with pytest.raises(harness.SideError, match="'A' timed no steps"):
    harness.parse_result('A', '{"step_s": []}\n')


# The side's end.


def test_run_side_times_warmup_apart():
  calls = []
  out = io.StringIO()
  record = harness.run_side(lambda: calls.append(1), warmup=2, iters=3,
                            setup_s=1.25, threads=4, info={'k': 'v'}, out=out)
  assert len(calls) == 5
  assert len(record['warmup_s']) == 2 and len(record['step_s']) == 3
  printed = json.loads(out.getvalue().strip().splitlines()[-1])
  assert printed == record
  assert printed['setup_s'] == 1.25 and printed['threads'] == 4
  assert printed['info'] == {'k': 'v'}
  with pytest.raises(ValueError):
    harness.run_side(lambda: None, warmup=0, iters=0, out=out)


def test_run_side_in_a_child_feeds_measure():
  code = (f'import sys; sys.path.insert(0, {REPO!r})\n'
          'from benchmarks import harness\n'
          'harness.run_side(lambda: None, warmup=1, iters=2, threads=1)\n')
  result, _ = measure([side('A', code, {'XLA_FLAGS': '--flag'})], rounds=1)
  a = result['sides']['A']
  assert a['steps'] == 2 and a['threads'] == 1 and a['xla_flags'] == '--flag'
  assert result['ratios'] == {}


# The runner's end.


def test_measure_fixed_sides():
  result, out = measure([side('A', fixed([0.1, 0.3, 0.2])),
                         side('B', fixed([0.4]))], rounds=3)
  assert result['order'] == ['A', 'B'] * 3
  a, b = result['sides']['A'], result['sides']['B']
  assert a['median_s'] == pytest.approx(0.2) and a['steps'] == 9
  assert a['round_medians_s'] == pytest.approx([0.2] * 3)
  assert a['spread_s']['rel'] == 0.0
  assert a['setup_s'] == [0.5] * 3 and a['first_warmup_median_s'] == 2.0
  assert len(a['runs']) == 3
  assert result['ratios']['B / A']['value'] == pytest.approx(2.0)
  assert result['ratios']['B / A']['meaning'] == '> 1: A is faster'
  assert result['machine']['matmul_gflops'] is None
  for line in ('round 1/3', 'to go', 'round 3/3', 'B / A = 2.00',
               'threads 3', 'XLA_FLAGS unset', 'matmul rate not measured'):
    assert line in out


def test_sides_alternate_in_fresh_processes(tmp_path):
  log = tmp_path / 'order.log'
  code = ('import os\n'
          'with open(os.environ["HARNESS_LOG"], "a") as f:\n'
          '  f.write(os.environ["HARNESS_NAME"] + str(os.getpid()) + "\\n")\n'
          + fixed([0.1]))
  sides = [side(n, code, {'HARNESS_LOG': str(log), 'HARNESS_NAME': n})
           for n in ('A', 'B')]
  measure(sides, rounds=3)
  lines = log.read_text().split()
  assert [l[0] for l in lines] == list('ABABAB')
  assert len(set(lines)) == 6  # a new process every time


def test_env_overrides_reach_the_child(monkeypatch):
  monkeypatch.setenv('HARNESS_DROPPED', 'inherited')
  monkeypatch.setenv('HARNESS_KEPT', 'inherited')
  code = ('import json, os\n'
          'print(json.dumps({"step_s": [1.0], "info": {k: os.environ.get(k) '
          'for k in ("HARNESS_SET", "HARNESS_DROPPED", "HARNESS_KEPT", '
          '"GLIBC_TUNABLES")}}))')
  result, out = measure([side('A', code, {
      'HARNESS_SET': 'x', 'HARNESS_DROPPED': None,
      'GLIBC_TUNABLES': 'glibc.malloc.arena_max=1'})], rounds=1)
  assert result['sides']['A']['info'] == {
      'HARNESS_SET': 'x', 'HARNESS_DROPPED': None, 'HARNESS_KEPT': 'inherited',
      'GLIBC_TUNABLES': 'glibc.malloc.arena_max=1'}
  assert 'GLIBC_TUNABLES=glibc.malloc.arena_max=1' in out


def test_failing_side_names_itself_and_its_stderr():
  bad = ('import sys\nprint("partial")\n'
         'sys.stderr.write("Traceback...\\nValueError: boom\\n")\nsys.exit(3)')
  with pytest.raises(harness.SideError,
                     match=r"side 'B' exited with 3; stderr: .*ValueError: "
                     "boom"):
    measure([side('A', fixed([0.1])), side('B', bad)])


def test_side_without_result_line():
  with pytest.raises(harness.SideError,
                     match="side 'A' printed no JSON result line.*done"):
    measure([side('A', 'print("done")')])


def test_side_that_cannot_start():
  with pytest.raises(harness.SideError, match="side 'A' could not start"):
    measure([harness.Side('A', ['/nonexistent/benchmark'])])


def test_bad_sides():
  with pytest.raises(ValueError):
    measure([side('A', fixed([1.0])), side('A', fixed([1.0]))])
  with pytest.raises(ValueError):
    measure([side('A', fixed([1.0]))], rounds=0)


def test_cli_main_one_error_line(capsys):
  def fail():
    measure([side('torch', 'import sys; sys.exit("no torch here")')])
  with pytest.raises(SystemExit) as e:
    harness.cli_main(fail)
  assert e.value.code == 1
  err = capsys.readouterr().err.strip()
  assert err.startswith("vidjax: error: side 'torch' exited with 1")
  assert 'no torch here' in err and '\n' not in err


def test_json_output(tmp_path):
  path = tmp_path / 'result.json'
  measure([side('A', fixed([0.1])), side('B', fixed([0.3]))],
          json_path=str(path), matmul=lambda: 12.5)
  result = json.loads(path.read_text())
  assert set(result['sides']) == {'A', 'B'}
  assert result['ratios']['B / A']['value'] == pytest.approx(3.0)
  assert result['machine']['matmul_gflops'] == 12.5
  assert result['sides']['A']['runs'][0]['step_s'] == [0.1]


def test_matmul_rate_tiny():
  assert harness.matmul_gflops(size=64, repeats=2) > 0
  assert harness.matmul_gflops(size=64, repeats=2, dtype='bfloat16') > 0


# The S3D script's sides (built without running them).


def test_s3d_sides_share_the_setting_env():
  args = s3d._parse(['--batch=1', '--iters=1'])
  vidjax, torch = s3d.sides(args, 'ynn+keepmem', 'train')
  assert vidjax.env['XLA_FLAGS'] == s3d.XLA_SETTINGS['ynn+keepmem']
  assert torch.env['XLA_FLAGS'] is None
  glibc = s3d.SETTING_ENV['ynn+keepmem']['GLIBC_TUNABLES']
  assert vidjax.env['GLIBC_TUNABLES'] == torch.env['GLIBC_TUNABLES'] == glibc
  assert '--side=vidjax' in vidjax.argv and '--side=torch' in torch.argv
  assert '--kind=train' in torch.argv and '--batch=1' in torch.argv
  assert 'GLIBC_TUNABLES' not in s3d.sides(args, 'ynn', 'infer')[0].env
  with pytest.raises(harness.VidjaxError, match='unknown --settings nope'):
    harness.choose('ynn,nope', s3d.XLA_SETTINGS, 'settings')


def test_measure_grid_runs_every_setting_and_kind_in_order(monkeypatch):
  calls = []

  def fake_measure(sides, *, rounds, label, matmul, matmul_dtype):
    calls.append((tuple(sides), rounds, label, matmul_dtype))
    assert matmul.keywords == {'dtype': matmul_dtype}
    return {'sides': {}, 'ratios': {}}

  monkeypatch.setattr(harness, 'measure', fake_measure)
  results = harness.measure_grid(lambda s, k: [f'{s}/{k}'], ['a', 'b'],
                                 ['infer', 'train'], rounds=2)
  assert [(r['setting'], r['kind']) for r in results] == [
      ('a', 'infer'), ('a', 'train'), ('b', 'infer'), ('b', 'train')]
  assert calls[1] == (('a/train',), 2, 'a train', 'float32')
  harness.measure_grid(lambda s, k: [f'{s}/{k}'], ['a'], ['train'], rounds=1,
                       matmul_dtype='bfloat16')
  assert calls[-1][-1] == 'bfloat16'


def test_write_comparisons_drops_the_side_flags(tmp_path):
  import argparse  # pylint: disable=g-import-not-at-top
  import json  # pylint: disable=g-import-not-at-top
  path = tmp_path / 'out.json'
  args = argparse.Namespace(batch=2, side=None, kind=None, json=str(path))
  harness.write_comparisons(str(path), args, [{'kind': 'infer'}])
  assert json.loads(path.read_text()) == {
      'args': {'batch': 2, 'json': str(path)},
      'comparisons': [{'kind': 'infer'}]}
  harness.write_comparisons(None, args, [])  # No --json: nothing written.
