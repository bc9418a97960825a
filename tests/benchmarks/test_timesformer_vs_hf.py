"""The TimeSformer benchmark's command lines and arithmetic (no timing)."""
import pytest

from benchmarks import timesformer_vs_hf as bench
from vidjax.errors import VidjaxError


def test_sides_and_environment():
  args = bench._parse(['--batch=2'])
  vidjax, hf = bench.sides(args, 'ynn', 'train')
  assert '--side=vidjax' in vidjax.argv and '--side=hf' in hf.argv
  assert '--batch=2' in hf.argv and '--kind=train' in vidjax.argv
  assert vidjax.env['XLA_FLAGS'] == bench.XLA_SETTINGS['ynn']
  assert hf.env['XLA_FLAGS'] is None
  assert '--precision=float32' in vidjax.argv
  args = bench._parse(['--precision=bfloat16'])
  assert all('--precision=bfloat16' in side.argv
             for side in bench.sides(args, 'default', 'infer'))


def test_achieved_flops():
  # 2 × 196.05 G MACs per clip, ×3 for a training step.
  assert bench.achieved_gflops('infer', 1, 1.0) == pytest.approx(392.1)
  assert bench.achieved_gflops('train', 2, 4.0) == pytest.approx(
      2 * 196.05 * 3 * 2 / 4)


def test_bad_flags():
  with pytest.raises(VidjaxError, match='--batch must be >= 1'):
    bench._parse(['--batch=0'])
