"""Parameter and multiply-accumulate counts, read off the traced program.

MACs are what the papers and torchvision call "FLOPs" (fvcore's convention):
one per multiply-add of every convolution and matrix product, and, as fvcore
counts them, 5 per element of every affine LayerNorm (4 without the affine);
nothing for batch norm (folded into the conv at inference), activations,
pooling or gating's sigmoid. TimeSformer's published 196.05 G include its
LayerNorms' 0.22 G. Counting the jaxpr
rather than the module tree means every lowering of a layer (a 1×1×1 conv as
an einsum, a 1×k×k conv folded to 2D) and every model family (attention's
matmuls included) is counted the same way, and nothing runs: the program is
only traced, so full-size models cost no compute.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def count_params(params: Any) -> int:
  """Number of scalars in a pytree of arrays or ShapeDtypeStructs."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(params))


def _conv_macs(eqn) -> int:
  lhs, rhs = (v.aval for v in eqn.invars[:2])
  out = eqn.outvars[0].aval
  dn = eqn.params['dimension_numbers']
  kernel_spatial = math.prod(rhs.shape[d] for d in dn.rhs_spec[2:])
  in_per_group = rhs.shape[dn.rhs_spec[1]]
  # Each output element reads in_per_group × kernel taps (groups included:
  # the kernel's input dim is already per group).
  del lhs
  return math.prod(out.shape) * in_per_group * kernel_spatial


def _dot_macs(eqn) -> int:
  lhs = eqn.invars[0].aval
  (lhs_contract, _), _ = eqn.params['dimension_numbers']
  contracted = math.prod(lhs.shape[d] for d in lhs_contract)
  return math.prod(eqn.outvars[0].aval.shape) * contracted


def _sub_jaxprs(eqn):
  for value in eqn.params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def jaxpr_macs(jaxpr) -> int:
  """MACs of conv_general_dilated and dot_general ops, nested jaxprs included."""
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == 'conv_general_dilated':
      total += _conv_macs(eqn)
    elif name == 'dot_general':
      total += _dot_macs(eqn)
    else:
      for sub in _sub_jaxprs(eqn):
        total += jaxpr_macs(sub)
  return total


def forward_macs(model, variables, input_shape, dtype=jnp.float32) -> int:
  """MACs of `model.apply(variables, x, train=False)` for x of `input_shape`.

  `variables` may be abstract (from `jax.eval_shape(model.init, ...)`).
  """
  x = jax.ShapeDtypeStruct(tuple(input_shape), dtype)
  norms = []

  def count_norms(next_fun, args, kwargs, context):
    if (isinstance(context.module, nn.LayerNorm) and
        context.method_name == '__call__'):
      module = context.module
      affine = module.use_scale or module.use_bias
      norms.append(math.prod(args[0].shape) * (5 if affine else 4))
    return next_fun(*args, **kwargs)

  def forward(v, x):
    with nn.intercept_methods(count_norms):
      return model.apply(v, x, train=False)
  closed = jax.make_jaxpr(forward)(variables, x)
  return jaxpr_macs(closed.jaxpr) + sum(norms)


def abstract_variables(model, input_shape, dtype=jnp.float32):
  """The model's variables as ShapeDtypeStructs, without materialising them."""
  x = jnp.zeros((1, *tuple(input_shape)[1:]), dtype)
  return jax.eval_shape(
      lambda: nn.unbox(model.init({'params': jax.random.key(0),
                          'dropout': jax.random.key(1)}, x)))

