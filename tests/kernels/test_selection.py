"""The one table: what 'auto' means per platform, and bad names."""
import unittest.mock

from absl.testing import parameterized
import jax

from vidjax import kernels
from vidjax import VidjaxError
from vidjax.kernels import selection


class DefaultKernelsTest(parameterized.TestCase):
  """'auto' means the platform's measured default (DEFAULT_KERNELS)."""

  def test_auto_follows_the_platform(self):
    self.assertEqual(jax.default_backend(), 'cpu')
    self.assertEqual(kernels.resolve('auto'), 'custom')
    with unittest.mock.patch.object(selection.jax, 'default_backend',
                                    return_value='gpu'):
      self.assertEqual(kernels.resolve('auto'), 'plain')
    # TPU: the custom forms, which the AOT report favours (docs/scale.md).
    self.assertEqual(kernels.default_kernels('tpu'), 'custom')
    self.assertEqual(kernels.default_kernels('some_new_chip'), 'plain')

  def test_explicit_choices_win_and_typos_fail(self):
    self.assertEqual(kernels.resolve('plain'), 'plain')
    with self.assertRaisesRegex(ValueError, "unknown kernels 'tpu'"):
      kernels.resolve('tpu')

  @parameterized.parameters(('xla', 'plain'), ('cpu', 'custom'))
  def test_a_former_name_is_an_error_that_names_the_new_one(self, old, new):
    # One line for the user (VidjaxError), listing the known names.
    with self.assertRaisesRegex(
        VidjaxError, f"unknown kernels '{old}'; known: auto, custom, plain "
        f"\\('{old}' is now called '{new}'\\)"):
      kernels.resolve(old)
