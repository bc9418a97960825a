"""kernels.matmul: a bf16 Dense's products, both gradients and the compiled
dots, against numpy in float64 and XLA's own HLO."""
import re

from absl.testing import parameterized
import chex
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from vidjax.kernels import matmul

DENSE = (((1,), (0,)), ((), ()))


def _bf16(rng, shape):
  return jnp.asarray(rng.normal(size=shape), jnp.bfloat16)


def _f64(x):
  return np.asarray(x.astype(jnp.float32), np.float64)


def _assert_rounded_from(out, exact):
  # float32 accumulation, then one rounding to bf16 (8 bits of mantissa):
  # within half a bf16 ulp of the exact product, plus float32 slack.
  out = _f64(out)
  bound = np.abs(exact) * 2.0 ** -8 + 1e-5 * np.abs(exact).max()
  assert np.all(np.abs(out - exact) <= bound), np.abs(out - exact).max()


class MixedDotGeneralTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ('rows_by_8', (40, 32), 48), ('rows_by_2', (2, 3, 16), 24),
      ('odd_rows', (7, 32), 16), ('one_row', (1, 16), 8))
  def test_products_and_gradients_match_numpy(self, x_shape, n):
    rng = np.random.default_rng(0)
    x, w = _bf16(rng, x_shape), _bf16(rng, (x_shape[-1], n))
    dims = (((x.ndim - 1,), (0,)), ((), ()))
    g = _bf16(rng, (*x_shape[:-1], n))

    def forward(x, w):
      return matmul.mixed_dot_general(x, w, dims)

    y, vjp = self.variant(lambda x, w: jax.vjp(forward, x, w))(x, w)
    dx, dw = vjp(g)
    chex.assert_type([y, dx, dw], jnp.bfloat16)
    chex.assert_shape([y, dx, dw], [g.shape, x.shape, w.shape])
    x64, w64, g64 = _f64(x), _f64(w), _f64(g)
    rows, grads = x64.reshape(-1, x.shape[-1]), g64.reshape(-1, n)
    _assert_rounded_from(y, x64 @ w64)
    _assert_rounded_from(dx, g64 @ w64.T)
    _assert_rounded_from(dw, rows.T @ grads)

  def test_other_dtypes_and_patterns_are_lax_dot_general(self):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(6, 8)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(8, 4)), jnp.float32)
    np.testing.assert_array_equal(matmul.mixed_dot_general(x, w, DENSE),
                                  lax.dot_general(x, w, DENSE))
    xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
    # Contracting the rows is not a Dense: left to XLA, bf16 out.
    other = (((0,), (0,)), ((), ()))
    np.testing.assert_array_equal(
        matmul.mixed_dot_general(xb, xb, other).astype(jnp.float32),
        lax.dot_general(xb, xb, other).astype(jnp.float32))
    # As is a bf16 Dense on a mesh of several devices.
    mesh = jax.make_mesh((jax.device_count(),), ('data',))
    if mesh.size > 1:
      with jax.set_mesh(mesh):
        hlo = jax.jit(lambda x, w: matmul.mixed_dot_general(
            x, w, DENSE)).lower(xb, wb).as_text()
      self.assertNotIn('f32', hlo.split('dot_general')[1].split('\n')[0])

  @parameterized.parameters(16, 12, 6, 7, 1)
  def test_row_major_transpose_is_the_transpose(self, rows):
    x = jnp.arange(rows * 5, dtype=jnp.float32).reshape(rows, 5)
    np.testing.assert_array_equal(
        jax.jit(matmul.row_major_transpose)(x), np.asarray(x).T)

  def test_every_product_of_the_step_is_a_bf16_dot(self):
    """The forward, input- and weight-gradient products all compile to
    bf16 × bf16 → f32 dots in YNNPACK fusions; XLA upcasting any of them to
    float32 (as it does a plain `x.T` in the weight gradient) fails this."""
    rng = np.random.default_rng(2)
    x, w = _bf16(rng, (64, 96)), _bf16(rng, (96, 128))

    def loss(x, w):
      y = matmul.mixed_dot_general(x, w, DENSE)
      return jnp.sum(y.astype(jnp.float32) ** 2)

    hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w).compile(
    ).as_text()
    dots = re.findall(r'= (\w+)\[[\d,]*\]\{[\d,]*\} dot\(([^)]*)\)', hlo)
    self.assertLen(dots, 3, hlo)
    operand_types = {}
    for line in hlo.splitlines():
      match = re.match(r'\s*%?([\w.\-]+) = (\w+)\[', line)
      if match:
        operand_types[match.group(1)] = match.group(2)
    for out_type, operands in dots:
      self.assertEqual(out_type, 'f32')
      for operand in operands.split(', '):
        self.assertEqual(operand_types[operand.lstrip('%')], 'bf16', operands)


class DotGeneralTest(parameterized.TestCase):

  def test_the_kernel_set_picks_the_dot(self):
    self.assertIs(matmul.dot_general('custom'), matmul.mixed_dot_general)
    self.assertIs(matmul.dot_general('plain'), lax.dot_general)
