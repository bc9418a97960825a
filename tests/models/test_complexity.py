"""Parameter and MAC counts: hand-computed layers, then pinned references."""
import json
import os
import subprocess
import sys

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax.numpy as jnp

from vidjax.layers import conv as conv_lib
from vidjax.models import complexity
from vidjax.tools import profile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


class _ConvThenDense(nn.Module):

  @nn.compact
  def __call__(self, x, train=False):
    del train
    x = conv_lib.Conv3D(6, (3, 3, 3), (1, 2, 2), padding='SAME')(x)
    x = conv_lib.Conv3D(5, (1, 3, 3), (1, 1, 1), padding='SAME')(x)  # 2D fold.
    x = conv_lib.Conv3D(4, (3, 1, 1), (1, 1, 1), padding='SAME')(x)  # T fold.
    x = conv_lib.Conv3D(7, (1, 1, 1), (1, 1, 1), padding='SAME')(x)  # einsum.
    return nn.Dense(10)(x.mean(axis=(1, 2, 3)))


class HandCountTest(absltest.TestCase):

  def test_every_lowering_counts_output_times_fan_in(self):
    model = _ConvThenDense()
    shape = (2, 4, 8, 8, 3)
    variables = complexity.abstract_variables(model, shape)
    out = 2 * 4 * 4 * 4  # Batch × T × H/2 × W/2 positions after the first.
    expected = (out * 6 * (27 * 3) + out * 5 * (9 * 6) + out * 4 * (3 * 5)
                + out * 7 * 4 + 2 * 10 * 7)
    self.assertEqual(complexity.forward_macs(model, variables, shape),
                     expected)
    # Conv3D has no bias by default (BN follows it); Dense has one.
    self.assertEqual(complexity.count_params(variables['params']),
                     81 * 6 + 54 * 5 + 15 * 4 + 4 * 7 + 7 * 10 + 10)


class ReferenceCountTest(parameterized.TestCase):
  """Counts from the reference code (torchvision; TF-slim s3dg.py/i3d.py)."""

  @parameterized.parameters(
      ('s3d_torchvision', 16, 8_320_048, 17_978_771_456),
      ('s3dg', 64, 9_518_848, 64_184_810_240),
      ('s3d', 64, 8_299_520, 64_183_590_912),
      ('i3d', 64, 12_689_984, 111_153_143_808),
  )
  def test_params_and_macs_at_224(self, name, frames, params, macs):
    result = profile.profile(name, frames=frames, size=224,
                             compile_forward=False)
    self.assertEqual(result['params'], params)
    self.assertEqual(result['macs'], macs)
    # The published rounding: torchvision lists S3D at "17.98 GFLOPS".
    if name == 's3d_torchvision':
      self.assertAlmostEqual(macs / 1e9, 17.979, places=3)


class ProfileCliTest(absltest.TestCase):

  def test_json_output_includes_compiled_cost(self):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run(
        [sys.executable, '-m', 'vidjax.tools.profile', '--model=s3dg',
         '--frames=8', '--size=64', '--num_classes=13', '--json'],
        capture_output=True, text=True, env=env, check=False, timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertEqual(result['input_shape'], [1, 8, 64, 64, 3])
    # XLA's own estimate, of the optimised program: the same order as
    # 2 flops per MAC, but XLA:CPU leaves out ops it hands to libraries
    # (measured 0.86 × 2·MACs here), so MACs are what papers compare.
    self.assertGreater(result['xla_flops'], 0.5 * result['macs'])
    self.assertLess(result['xla_flops'], 3 * result['macs'])
    self.assertGreater(result['memory_bytes']['arguments'],
                       4 * result['params'])

  def test_unknown_model_is_one_line_error(self):
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run(
        [sys.executable, '-m', 'vidjax.tools.profile', '--model=nope'],
        capture_output=True, text=True, env=env, check=False, timeout=300)
    self.assertEqual(proc.returncode, 1)
    self.assertEqual(proc.stderr.strip().splitlines()[-1][:15],
                     'vidjax: error: ')
    self.assertNotIn('Traceback', proc.stderr)


if __name__ == '__main__':
  absltest.main()
