"""Fingerprints of tiny models' train steps, per kernel set.

A fingerprint is the sha256 of the StableHLO text that `jax.jit(step)
.lower(...)` emits for a train step (forward, loss, backward, gradients,
updated batch statistics) of a tiny model, without location or debug
information. It names no file and no line, so it changes only when the
program changes: moving a kernel between modules, renaming a module or
re-wiring a layer leaves it as it is, while any change to the maths or to
the order of the ops shows. It only lowers: nothing is compiled or run.

golden_hlo.json was written by the code of commit 858a40e, before the
kernels moved out of vidjax/layers/ into vidjax/kernels/, by a copy of
this file that spelled the option as it was then: `lowering`, 'cpu' for
'custom' and 'xla' for 'plain'. TimeSformer had no option: its 'custom'
was the code as it stood (every Dense through mixed_dot_general), its
'plain' the same with attention.Dense patched to nn.Dense with
lax.dot_general. tests/kernels/test_unchanged.py asserts that today's code
lowers to the same programs.

When a change to a lowered program is intended (a new kernel, a jax
upgrade), regenerate the file and say why in the commit:

  bash run.sh python -m tests.kernels.fingerprints --write
"""
import argparse
import hashlib
import json
import os
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vidjax.models import create_model

GOLDEN = pathlib.Path(__file__).with_name('golden_hlo.json')

# name → (model, options, clip [N, T, H, W, 3], compute dtype).
_S3DG = dict(depth_multiplier=0.125, min_depth=8)
_TIMESFORMER = dict(embed_dim=16, depth=2, num_heads=2, patch_size=8,
                    image_size=32, num_frames=4)
MODELS = {
    's3dg': ('s3dg', _S3DG, (2, 8, 32, 32, 3), None),
    's3dg_bf16': ('s3dg', _S3DG, (2, 8, 32, 32, 3), 'bfloat16'),
    'i3d': ('i3d', _S3DG, (2, 8, 32, 32, 3), None),
    'tsm_r18': ('tsm_r18', dict(width=4), (2, 8, 32, 32, 3), None),
    'timesformer': ('timesformer', _TIMESFORMER, (2, 4, 32, 32, 3), None),
    'timesformer_bf16': ('timesformer', _TIMESFORMER, (2, 4, 32, 32, 3),
                         'bfloat16'),
}
KERNEL_SETS = ('custom', 'plain')
# The model option that chooses the kernel set, and its values.
OPTION = 'kernels'
VALUES = {'custom': 'custom', 'plain': 'plain'}
NUM_CLASSES = 5


def case_names() -> list[str]:
  return [f'{m}/{k}' for m in MODELS for k in KERNEL_SETS]


def _model(case: str) -> tuple[nn.Module, tuple[int, ...]]:
  name, kernels = case.split('/')
  model_name, options, clip, dtype = MODELS[name]
  options = {**options, OPTION: VALUES[kernels]}
  if dtype:
    options['dtype'] = dtype
  return create_model(model_name, num_classes=NUM_CLASSES, **options), clip


def train_step(model):
  """(variables, video, labels, rng) → (loss, logits, grads, batch_stats)."""

  def step(variables, video, labels, rng):
    def loss_fn(params):
      logits, new_vars = model.apply(
          {**variables, 'params': params}, video, train=True,
          mutable=['batch_stats'], rngs={'dropout': rng})
      logits = logits.astype(jnp.float32)
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits, labels).mean()
      return loss, (logits, new_vars)

    grads, (logits, new_vars) = jax.grad(loss_fn, has_aux=True)(
        variables['params'])
    return logits, grads, new_vars.get('batch_stats', {})

  return step


def lowered_text(case: str) -> str:
  """The StableHLO of `case`'s train step, without debug information."""
  model, clip = _model(case)
  video = jax.ShapeDtypeStruct(clip, jnp.float32)
  variables = jax.eval_shape(lambda: nn.unbox(
      model.init({'params': jax.random.key(0), 'dropout': jax.random.key(1)},
                 jnp.zeros(clip, jnp.float32))))
  labels = jax.ShapeDtypeStruct(clip[:1], jnp.int32)
  rng = jax.eval_shape(lambda: jax.random.key(2))
  lowered = jax.jit(train_step(model)).lower(variables, video, labels, rng)
  text = lowered.as_text(debug_info=False)
  # Nothing machine- or checkout-specific may remain: no locations.
  if re.search(r'\bloc\(|\.py\b', text):
    raise AssertionError(f'{case}: lowered text holds debug information')
  return text


def fingerprint(case: str) -> str:
  return hashlib.sha256(lowered_text(case).encode()).hexdigest()


def versions() -> dict[str, str]:
  import flax  # pylint: disable=g-import-not-at-top
  return {'jax': jax.__version__, 'jaxlib': __import__('jaxlib').__version__,
          'flax': flax.__version__}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--write', action='store_true',
                      help=f'write {GOLDEN.name} (else print)')
  parser.add_argument('--cases', nargs='*', default=None)
  parser.add_argument('--dump', default=None,
                      help='a directory to write each lowered text to')
  args = parser.parse_args()
  cases = args.cases or case_names()
  prints = {}
  for case in cases:
    text = lowered_text(case)
    prints[case] = hashlib.sha256(text.encode()).hexdigest()
    print(case, prints[case], flush=True)
    if args.dump:
      os.makedirs(args.dump, exist_ok=True)
      path = os.path.join(args.dump, case.replace('/', '.') + '.mlir')
      pathlib.Path(path).write_text(text)
  if args.write:
    GOLDEN.write_text(json.dumps({'versions': versions(),
                                  'fingerprints': prints}, indent=1) + '\n')


if __name__ == '__main__':
  main()
