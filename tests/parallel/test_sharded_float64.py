"""S3D-G's sharded train step equals one device's, in float64.

Why float64: in float32 the gradients of S3D-G are chaotic under any
change of summation order, sharded or not (docs/scale.md, "Sharded against
unsharded in float64"): a max-pool whose two best taps lie within rounding
of each other, or a ReLU input within rounding of zero, flips, and that
element's gradient changes by O(1). At the demo's width one float32 step
moves the momentum by ~1e-3 on 8 devices, and by as much on one device
given the same clips perturbed by float32 rounding. Float32 comparisons
therefore need a tolerance that could hide a real bug (a halo frame off
by one at one stage moves a few gradients by ~1e-3 too).

In float64 (parameters, clips and compute; BN running statistics stay
float32, as the layer stores them) rounding is 1e-16 and no flip happens:
at the demo's width the one-step momentum of meshes (8, 1), (4, 2) and
(2, 4) agrees with one device's to 3e-14 per leaf. So every leaf of the
new state must agree to 1e-10 relative, a bound that summation order
(~1e-14 measured here; float64 error grows with the square root of the
terms summed, 1e5 at most here) cannot reach and any real discrepancy
(a wrong halo, BN over one shard, a dropout mask that follows the
sharding, a loss over the wrong count) exceeds by orders of magnitude.
The BN statistics are float32 values computed in float64: they agree to
within one float32 rounding, 1e-7.

The size: 16 frames of 32², so that on (4, 2) every temporal op of every
stage runs time-sharded with halo frames (the stem's strided 3×7×7 conv,
the separable blocks' 3×1×1 convs, the 3×3×3 branch pools, the strided
MaxPool_4a and MaxPool_5a), and on (2, 4) the stages whose T is below the
time axis take their fallbacks (MaxPool_5a unsharded, Mixed_5* with the
time axis moved onto the batch). Dropout stays on, as in the demo. The
learning rate of step 0 is 0 (warm-up), so the momentum is the gradient
plus weight decay.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.parallel.test_sharded_step import BATCH
from tests.parallel.test_sharded_step import NUM_CLASSES
from tests.parallel.test_sharded_step import batch_of
from tests.parallel.test_sharded_step import relative_errors
from tests.parallel.test_sharded_step import tiny_config
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import setup as setup_lib

MESHES = ((4, 2), (2, 4))
# Measured at the demo's width: 3e-14 (module doc).
FLOAT64_TOLERANCE = 1e-10
FLOAT32_TOLERANCE = 1e-7  # The float32-stored BN statistics.


def to_float64(tree):
  return jax.tree.map(
      lambda x: x.astype(np.float64) if x.dtype == np.float32 else x, tree)


def one_step(setup, state, batch):
  """One float64 train step on setup's mesh, then the evaluation of its
  new state on the same clips: (new state, sums, log_probs) on host."""
  with jax.enable_x64(True), setup.context():
    state = to_float64(state)
    # The layer stores BN statistics in float32 whatever it computes in.
    state = state.replace(batch_stats=jax.tree.map(
        lambda x: x.astype(np.float32), state.batch_stats))
    rng = jax.device_put(jax.random.key(0), mesh_lib.replicated(setup.mesh))
    new, sums = setup.train_step(
        jax.device_put(state, setup.state_sharding),
        mesh_lib.to_global_batch(batch, setup.batch_sharding), rng)
    # The sharded eval step too (its own program: BN from the running
    # statistics, no dropout).
    log_probs = setup.eval_step(
        new, jax.device_put(batch['video'], setup.video_sharding(BATCH)))
    return jax.device_get(new), jax.device_get(sums), np.asarray(log_probs)


@pytest.fixture(scope='module')
def batch():
  return to_float64(batch_of(1)) | {'mask': np.ones(BATCH, np.float32)}


@pytest.fixture(scope='module')
def initial_state():
  mesh = mesh_lib.make_mesh({'data': 1}, devices=jax.devices()[:1])
  setup = setup_lib.build(tiny_config(), NUM_CLASSES, mesh)
  with setup.context():
    return setup, jax.device_get(setup.init(jax.random.key(0)))


@pytest.fixture(scope='module')
def single_device(initial_state, batch):
  setup, state = initial_state
  return one_step(setup, state, batch)


def worst_leaves(actual, expected, limit):
  return {jax.tree_util.keystr(path): e for path, e in
          jax.tree_util.tree_leaves_with_path(
              relative_errors(actual, expected)) if e > limit}


@pytest.mark.parametrize('data,time', MESHES)
def test_float64_step_equals_single_device(initial_state, batch,
                                           single_device, data, time):
  _, state = initial_state
  expected, expected_sums, expected_log_probs = single_device
  setup = setup_lib.build(tiny_config(data, time), NUM_CLASSES)
  assert dict(setup.mesh.shape) == {'data': data, 'time': time}
  assert setup.model.dropout_rate > 0  # The demo's dropout, sharded too.
  got, sums, log_probs = one_step(setup, state, batch)

  # The arithmetic really was float64, and the step computed a gradient.
  momentum = jax.tree.leaves(got.opt_state)
  assert all(m.dtype == np.float64 for m in momentum if m.ndim)
  assert max(np.abs(m).max() for m in momentum if m.ndim) > 0
  np.testing.assert_allclose(sums['loss'], expected_sums['loss'],
                             rtol=FLOAT64_TOLERANCE)
  assert not worst_leaves(got.opt_state, expected.opt_state,
                          FLOAT64_TOLERANCE)
  assert not worst_leaves(got.params, expected.params, FLOAT64_TOLERANCE)
  assert not worst_leaves(got.batch_stats, expected.batch_stats,
                          FLOAT32_TOLERANCE)
  # The head rounds the logits to float32 (module doc): equal float64
  # logits give log-probabilities equal to float32 rounding.
  np.testing.assert_allclose(log_probs, expected_log_probs, rtol=1e-6,
                             atol=1e-7)
