"""The TSM benchmark's command lines and flag checks (no timing)."""
import os
import subprocess
import sys

import pytest

from benchmarks import harness
from benchmarks import tsm_vs_torch
from vidjax.errors import VidjaxError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def test_each_side_reruns_the_script_with_its_own_environment():
  args = tsm_vs_torch._parse(['--batch=3', '--segments=16', '--size=112'])
  vidjax, torch = tsm_vs_torch.sides(args, 'ynn', 'stream')
  assert vidjax.argv[1] == os.path.abspath(tsm_vs_torch.__file__)
  for side, name in ((vidjax, 'vidjax'), (torch, 'torch')):
    assert f'--side={name}' in side.argv and '--kind=stream' in side.argv
    assert {'--batch=3', '--segments=16', '--size=112'} <= set(side.argv)
  assert vidjax.env['XLA_FLAGS'] == tsm_vs_torch.XLA_SETTINGS['ynn']
  assert torch.env['XLA_FLAGS'] is None


def test_a_stream_step_is_one_frame_so_a_clip_is_timed_per_step():
  args = tsm_vs_torch._parse(['--iters=2', '--segments=8'])
  args.kind = 'stream'
  assert tsm_vs_torch._iters(args) == 16
  args.kind = 'train'
  assert tsm_vs_torch._iters(args) == 2


@pytest.mark.parametrize('argv,message', [
    (['--batch=0'], '--batch must be >= 1'),
    (['--rounds=0'], '--rounds must be >= 1'),
])
def test_bad_flags(argv, message):
  with pytest.raises(VidjaxError, match=message):
    tsm_vs_torch._parse(argv)
  with pytest.raises(VidjaxError, match='unknown --kinds'):
    harness.choose('infer,walk', tsm_vs_torch.KINDS, 'kinds')


def test_a_bad_flag_is_one_error_line():
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'benchmarks', 'tsm_vs_torch.py'),
       '--kinds=fly'], capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines() == [
      'vidjax: error: unknown --kinds fly; known: infer, train, stream']


def test_two_device_settings_are_asked_for_by_name():
  args = tsm_vs_torch._parse([])
  assert set(args.settings.split(',')) == {'ynn'}
  assert not set(args.settings.split(',')) & set(tsm_vs_torch.OPT_IN)
  vidjax, torch = tsm_vs_torch.sides(args, 'ynn-dp2', 'infer')
  flags = vidjax.env['XLA_FLAGS'].split()
  assert '--xla_force_host_platform_device_count=2' in flags
  assert '--xla_cpu_experimental_ynn_fusion_type=dot,reduce' in flags
  assert torch.env['XLA_FLAGS'] is None
