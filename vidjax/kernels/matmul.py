"""A `dot_general` for Dense layers that computes in bfloat16 on a CPU.

'custom' is `mixed_dot_general` below, 'plain' `lax.dot_general`; a Dense
takes `dot_general(kernels)` (vidjax/layers/attention.py's `Dense`).

TPUs multiply bf16 operands and accumulate in float32 natively, whatever
the HLO asks for. XLA:CPU does that only for a dot whose HLO says so
(bf16 × bf16 → f32), and only for one YNNPACK takes; that is where
Sapphire Rapids' AMX tiles run. Measured on this machine (2 cores,
benchmarks/README.md, "TimeSformer in bfloat16"), a [1576, 768] × [768,
3072] dot:

- float32: ~320 GFLOP/s (Eigen or YNNPACK);
- bf16 × bf16 → bf16, what `nn.Dense(dtype=bfloat16)` emits: ~280
  (XLA upcasts it to float32 and adds the converts);
- bf16 × bf16 → f32: ~1000-1300, forward and input gradient alike;
- the weight gradient xᵀ·g, which contracts the rows, the major axis of
  x: YNNPACK declines a column-major lhs, so XLA upcasts it: ~320.

`mixed_dot_general` asks for f32 accumulation in all three products, and
gives the weight gradient a row-major xᵀ: a transpose through a [R/f, f, K]
view, which XLA's simplifier does not fold back into the dot as it folds a
plain `x.T` (or one behind `optimization_barrier`, a multiply or a
bitcast: all tried). That product then runs at ~850 GFLOP/s.

The values are those of TPU mixed precision: products accumulated in
float32, rounded to the compute dtype on the way out; the weight gradient
is rounded to the kernel's dtype (bf16, cast from the float32 parameter)
as autodiff of a bf16 Dense rounds it. For any other dtype it is
`lax.dot_general`, as it is off the CPU (a TPU needs none of this) and on a
mesh of several devices (merging the leading axes into rows would make the
partitioner gather time-sharded sequences: see attention.dense_on_rows).
"""
from __future__ import annotations

import functools

import jax
from jax import lax
import jax.numpy as jnp

from vidjax.kernels import selection

_ROWS_BY_FEATURES = (((1,), (0,)), ((), ()))


def dot_general(kernels: str = 'custom'):
  """The `dot_general` of a Dense by `kernels`: mixed_dot_general ('custom')
  or lax.dot_general ('plain'); 'auto' by the platform."""
  if selection.resolve(kernels) == 'custom':
    return mixed_dot_general
  return lax.dot_general


def mixed_dot_general(lhs, rhs, dimension_numbers, precision=None,
                      preferred_element_type=None):
  """`lax.dot_general`, with bf16 operands of a Dense as described above.

  Takes the Dense pattern, lhs [..., K] × rhs [K, N], contracting the last
  axis of lhs, on one CPU device; anything else, or operands that are not
  both bf16, goes to `lax.dot_general` unchanged.
  """
  (lc, rc), (lb, rb) = dimension_numbers
  dense = (tuple(lc) == (lhs.ndim - 1,) and tuple(rc) == (0,) and rhs.ndim == 2
           and not lb and not rb)
  if (not dense or preferred_element_type is not None
      or lhs.dtype != jnp.bfloat16 or rhs.dtype != jnp.bfloat16
      or jax.default_backend() != 'cpu'
      or jax.sharding.get_abstract_mesh().size > 1):
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type)
  rows = lhs.reshape(-1, lhs.shape[-1])
  out = _mixed_matmul(rows, rhs, precision)
  return out.reshape(*lhs.shape[:-1], rhs.shape[1])


def _accumulate(lhs, rhs, dims, precision):
  return lax.dot_general(lhs, rhs, dims, precision=precision,
                         preferred_element_type=jnp.float32)


def row_major_transpose(x: jax.Array) -> jax.Array:
  """x [R, K] → xᵀ [K, R], as a transpose XLA keeps (see the module doc).

  Through a [R/f, f, K] view for the largest f in (8, 4, 2) dividing R; an
  R with none of them gets a plain transpose (which XLA may fold).
  """
  r = x.shape[0]
  f = next((f for f in (8, 4, 2) if r % f == 0 and r > f), None)
  if f is None:
    return x.T
  return jnp.transpose(x.reshape(r // f, f, -1), (2, 0, 1)).reshape(-1, r)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mixed_matmul(x, w, precision):
  return _accumulate(x, w, _ROWS_BY_FEATURES, precision).astype(x.dtype)


def _mixed_matmul_fwd(x, w, precision):
  return _mixed_matmul(x, w, precision), (x, w)


def _mixed_matmul_bwd(precision, residuals, g):
  x, w = residuals
  g = g.astype(x.dtype)
  dx = _accumulate(g, w, (((1,), (1,)), ((), ())), precision)
  dw = _accumulate(row_major_transpose(x), g, _ROWS_BY_FEATURES, precision)
  return dx.astype(x.dtype), dw.astype(w.dtype)


_mixed_matmul.defvjp(_mixed_matmul_fwd, _mixed_matmul_bwd)
