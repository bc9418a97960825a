"""benchmarks/timed_steps.py: data-parallel steps equal one-device steps."""
import chex
import jax
import numpy as np

from benchmarks import timed_steps
from vidjax.models import create_model

CLIP = (4, 4, 32, 32, 3)  # Four clips, one per device.


def _model_and_data():
  model = create_model('tsm_r18', num_classes=5, num_segments=CLIP[1],
                       width=4, dropout_rate=0.0)
  rng = np.random.default_rng(0)
  video = rng.normal(size=CLIP).astype(np.float32)
  labels = np.arange(CLIP[0]) % 5
  # Host copies: each training step donates the device arrays it is given.
  variables = jax.tree.map(
      np.asarray, jax.jit(model.init)(jax.random.key(1), video))
  return model, variables, video, labels


def test_one_device_needs_no_mesh():
  assert timed_steps.host_data_parallel(4, num_devices=1) is None


def test_data_parallel_inference_splits_the_batch_and_equals_one_device():
  model, variables, video, _ = _model_and_data()
  expected = timed_steps.vidjax_infer(model, variables, video)()
  parallel = timed_steps.host_data_parallel(CLIP[0], num_devices=4)
  logits = timed_steps.vidjax_infer(model, variables, video, parallel)()
  # Each device holds one clip's logits: the data axis does not replicate.
  assert len(logits.sharding.device_set) == 4
  assert {s.data.shape for s in logits.addressable_shards} == {(1, 5)}
  chex.assert_trees_all_close(np.asarray(logits), np.asarray(expected),
                              rtol=1e-5, atol=1e-6)


def test_data_parallel_training_equals_one_device():
  model, variables, video, labels = _model_and_data()
  expected = jax.tree.map(np.asarray, timed_steps.vidjax_train(
      model, variables, video, labels)())
  parallel = timed_steps.host_data_parallel(CLIP[0], num_devices=4)
  state = jax.tree.map(np.asarray, timed_steps.vidjax_train(
      model, variables, video, labels, parallel)())
  # BN statistics over the global batch: the same update as one device.
  chex.assert_trees_all_close(state, expected, rtol=1e-5, atol=1e-6)
