"""benchmarks/input_pipeline.py on the harness: the sides it builds, its flag
checks and its clips-per-second arithmetic (no loaders run, no timing)."""
import os
import subprocess
import sys

import pytest

from benchmarks import input_pipeline as ip
from vidjax.errors import VidjaxError

SCRIPT = os.path.abspath(ip.__file__)


def parent_args(*argv):
  args = ip.parse(list(argv))
  args.data = '/tmp/data'  # What main() sets before building sides.
  return args


@pytest.mark.parametrize('frames,stride', ip.SETTINGS)
@pytest.mark.parametrize('threads', ip.THREADS)
def test_sides_rerun_the_script_per_loader(frames, stride, threads):
  args = parent_args('--clips=32', '--batch=4', '--warmup=2')
  vidjax, pyav = ip.sides(args, frames, stride, threads)
  assert (vidjax.name, pyav.name) == ('vidjax', 'pyav')
  for side in (vidjax, pyav):
    assert side.argv[:2] == [sys.executable, SCRIPT]
    assert f'--side={side.name}' in side.argv
    for flag in ('--data=/tmp/data', f'--threads={threads}', '--batch=4',
                 '--clips=32', '--warmup=2', f'--frames={frames}',
                 f'--stride={stride}'):
      assert flag in side.argv, (side.name, flag)
    assert '--segments' not in side.argv
    # Neither loader is JAX: no XLA_FLAGS reported for them.
    assert side.env['XLA_FLAGS'] is None
    assert side.timeout_s == ip.SIDE_TIMEOUT_S
  assert vidjax.env['TF_ENABLE_ONEDNN_OPTS'] == '0'
  # A side's argv is a valid side command line.
  side_args = ip.parse(vidjax.argv[2:])
  assert side_args.side == 'vidjax' and side_args.threads == [threads]
  assert (side_args.frames, side_args.stride) == (frames, stride)
  assert ip.steps_per_round(side_args) == 8


def test_tsn_side_is_vidjax_only_with_segments():
  [side] = ip.tsn_sides(parent_args(), '1')
  assert side.name == 'vidjax'
  assert '--segments' in side.argv and '--threads=1' in side.argv
  assert not any(a.startswith('--frames') for a in side.argv)
  assert ip.parse(side.argv[2:]).segments


@pytest.mark.parametrize('argv,message', [
    (['--clips=0'], '--clips must be >= 1'),
    (['--clips=4', '--batch=8'], 'at least one batch'),
    (['--rounds=0'], '--rounds must be >= 1'),
    (['--warmup=0'], '--warmup must be >= 1'),
    (['--threads=2'], 'unknown --threads 2'),
    (['--clips=many'], 'invalid int value'),
    (['--side=pyav'], 'the runner sets them'),
])
def test_bad_flags_raise(argv, message):
  with pytest.raises(VidjaxError, match=message):
    ip.parse(argv)


def test_bad_flag_is_one_error_line():
  proc = subprocess.run([sys.executable, SCRIPT, '--clips', '0'],
                        capture_output=True, text=True, check=False,
                        timeout=60)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      'vidjax: error: --clips must be >= 1, not 0']


def test_rates_from_cpu_and_wall_times():
  def run(cpu_step_s):
    return {'info': {'clips_per_step': 8, 'cpu_warmup_s': [9.0],
                     'cpu_step_s': cpu_step_s}}
  # Round 1: 16 clips in 0.5 CPU-s; round 2: 16 clips in 1.0 CPU-s.
  side = {'runs': [run([0.2, 0.3]), run([0.5, 0.5])], 'median_s': 0.4,
          'round_medians_s': [0.25, 0.5]}
  r = ip.rates(side)
  assert r['cpu_per_round'] == pytest.approx([32.0, 16.0])
  assert r['cpu'] == pytest.approx(24.0)  # Median of two rounds.
  assert r['wall'] == pytest.approx(20.0)
  assert r['wall_per_round'] == pytest.approx([32.0, 16.0])


def test_mp4_paths_in_numeric_order(tmp_path):
  for v in (10, 2, 1):
    (tmp_path / f'video{v}.mp4').write_bytes(b'')
  assert [os.path.basename(p) for p in ip.mp4_paths(str(tmp_path))] == [
      'video1.mp4', 'video2.mp4', 'video10.mp4']
