"""S3D-G self-gating against numpy."""
from absl.testing import parameterized
import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax.layers.gating import SelfGating


class SelfGatingTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(('no_bias', False), ('bias', True))
  def test_matches_numpy(self, use_bias):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 6, 8)).astype(np.float32)
    gate = SelfGating(use_bias=use_bias)
    variables = nn.unbox(gate.init(jax.random.key(0), x))
    params = jax.tree.map(
        lambda p: rng.normal(size=p.shape).astype(np.float32),
        variables['params'])
    y = self.variant(gate.apply)({'params': params}, x)
    w = params['gate']['kernel']
    b = params['gate']['bias'] if use_bias else 0.0
    pooled = x.reshape(2, -1, 8).mean(axis=1)            # [N, C]
    weights = 1 / (1 + np.exp(-(pooled @ w + b)))         # [N, C]
    chex.assert_trees_all_close(y, x * weights[:, None, None, None, :],
                                rtol=1e-5, atol=1e-6)
    chex.assert_type(y, jnp.float32)
    self.assertEqual(set(params['gate']), {'kernel', 'bias'} if use_bias
                     else {'kernel'})

  def test_gate_depends_on_the_whole_clip(self):
    # Changing one frame changes the gate, hence every other frame's output.
    x = np.random.default_rng(1).normal(size=(1, 3, 4, 4, 4)).astype(
        np.float32)
    gate = SelfGating()
    variables = nn.unbox(gate.init(jax.random.key(1), x))
    x2 = x.copy()
    x2[:, 2] += 5.0
    y1, y2 = gate.apply(variables, x), gate.apply(variables, x2)
    self.assertFalse(np.allclose(y1[:, 0], y2[:, 0]))

  def test_bfloat16(self):
    x = jnp.ones((1, 2, 4, 4, 8), jnp.bfloat16)
    gate = SelfGating(dtype=jnp.bfloat16)
    y = gate.apply(nn.unbox(gate.init(jax.random.key(0), x)), x)
    chex.assert_type(y, jnp.bfloat16)
