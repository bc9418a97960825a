"""The kernels' move out of vidjax/layers/ changed no lowered program.

Each tiny model's train step, with either kernel set, must lower to the
StableHLO that commit 858a40e lowered (tests/kernels/golden_hlo.json; see
tests/kernels/fingerprints.py for what a fingerprint is and how to
regenerate the file when a change to a program is intended). The text is
compared, not values: XLA:CPU's results may differ across CPUs, the lowered
program does not.
"""
import json

from absl.testing import parameterized

from tests.kernels import fingerprints

_GOLDEN = json.loads(fingerprints.GOLDEN.read_text())


class UnchangedTest(parameterized.TestCase):

  def test_recorded_with_these_versions(self):
    # Another jax or flax may lower the same code differently: regenerate
    # (fingerprints.py) after checking that the change is theirs.
    self.assertEqual(fingerprints.versions(), _GOLDEN['versions'])

  def test_every_case_is_recorded(self):
    self.assertEqual(sorted(fingerprints.case_names()),
                     sorted(_GOLDEN['fingerprints']))

  @parameterized.parameters(*fingerprints.case_names())
  def test_same_lowered_train_step(self, case):
    self.assertEqual(fingerprints.fingerprint(case),
                     _GOLDEN['fingerprints'][case], case)

  def test_the_kernel_sets_differ_where_they_should(self):
    # A switch that changed nothing would pass the test above by accident:
    # the two sets lower differently wherever a custom kernel applies, and
    # identically for a float32 TimeSformer (its custom dot is bf16 only).
    golden = _GOLDEN['fingerprints']
    for model in fingerprints.MODELS:
      same = golden[f'{model}/custom'] == golden[f'{model}/plain']
      self.assertEqual(same, model == 'timesformer', model)
