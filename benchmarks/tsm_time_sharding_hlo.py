"""What time sharding costs TSM in collectives: halo shift vs the partitioner.

Compiles the TSM-R50 train step (tiny width) on simulated CPU devices for a
(data, time) mesh twice, with vidjax's halo exchange (the temporal shift's
boundary frame by `ppermute`, vidjax/parallel/halo.py) and inside
`comparison.partitioner_only()` (the partitioner alone), and prints the
collectives of each compiled HLO by kind, count x bytes per device, as a
markdown table; then the collective-permutes of the halo step block by
block, and what the same exchange moves in a real step (computed from the
model's shapes, no compile). No timing: this is about what the mesh does (docs/scale.md).

  bash run.sh python benchmarks/tsm_time_sharding_hlo.py        # tiny, ~1 min
  bash run.sh python benchmarks/tsm_time_sharding_hlo.py --full_batch=16

tests/parallel/test_tsm_sharded.py imports the helpers (config, the shapes
the shifts see, the permutes read from the HLO).
"""
import argparse
import collections
import math
import os
import re
import sys

os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
    os.environ.get('XLA_FLAGS', ''),
    '--xla_force_host_platform_device_count=8']))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import flax.linen as nn  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax  # pylint: disable=wrong-import-position
import jax.numpy as jnp  # pylint: disable=wrong-import-position
import ml_collections  # pylint: disable=wrong-import-position

from benchmarks.timed_steps import compile_train_step  # pylint: disable=wrong-import-position
from configs import demo  # pylint: disable=wrong-import-position
from vidjax.layers import shift as shift_lib  # pylint: disable=wrong-import-position
from vidjax.parallel import comparison  # pylint: disable=wrong-import-position
from vidjax.tools.aot import collectives as hlo_collectives  # pylint: disable=wrong-import-position
from vidjax.train import setup as setup_lib  # pylint: disable=wrong-import-position

NUM_CLASSES = 400


def tsm_config(*, data=2, time=4, frames=8, size=32, width=8, batch=4,
               model='tsm_r50', **model_options):
  """The demo config with a TSM model; dropout off (masks follow the batch)."""
  config = demo.get_config()
  config.model_name = model
  config.model = ml_collections.ConfigDict(
      dict(width=width, dropout_rate=0.0, **model_options))
  config.data.num_frames = frames
  config.data.crop_size = size
  config.batch_size = batch
  config.total_steps = 10
  # No warm-up: the first step already moves the parameters.
  config.optimizer.warmup_steps = 0
  config.mesh = {'data': data, 'time': time}
  return config


def shift_inputs(model: nn.Module, clip_shape) -> dict[str, tuple]:
  """{block path: shape of the input its temporal shift sees}, whole clip.

  Read from the model itself (an interceptor on `TemporalShift` under
  `jax.eval_shape`), so nothing is compiled and nothing hard-codes R50.
  Only blocks that move channels (fold = C // fold_div > 0) are listed.
  """
  found = {}

  def record(f, args, kwargs, context):
    module = context.module
    if (isinstance(module, shift_lib.TemporalShift)
        and context.method_name == '__call__'
        and args[0].shape[-1] // module.fold_div):
      found['/'.join(module.scope.path[:-1])] = tuple(args[0].shape)
    return f(*args, **kwargs)

  def init(clip):
    with nn.intercept_methods(record):
      return model.init(jax.random.key(0), clip)

  jax.eval_shape(init, jax.ShapeDtypeStruct(tuple(clip_shape), jnp.float32))
  return found


def fold_of(model: nn.Module, shape) -> int:
  return shape[-1] // model.shift_div


def halo_shape(model: nn.Module, shape, data: int) -> tuple[int, ...]:
  """One frame's shifted channels of a local shard: what one permute moves."""
  return (shape[0] // data, 1, *shape[2:-1], fold_of(model, shape))


Permute = collections.namedtuple(
    'Permute', 'block backward shape bytes pairs')

_PERMUTE = re.compile(
    r'=\s*\(?(\w+)\[([\d,]*)\][^=]*?\bcollective-permute(?:-start)?\(.*?'
    r'source_target_pairs=\{((?:\{\d+,\d+\},?)*)\}.*?op_name="([^"]*)"')
_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 'f64': 8}


def permutes(hlo: str) -> list[Permute]:
  """The collective-permutes of an optimized HLO, with the block that made
  each (from its op_name metadata) and whether it is in the backward pass."""
  out = []
  for line in hlo.splitlines():
    match = _PERMUTE.search(line)
    if not match:
      continue
    dtype, dims, pairs, op_name = match.groups()
    shape = tuple(int(d) for d in dims.split(',') if d)
    block = re.search(r'(layer\d+/block\d+)', op_name)
    out.append(Permute(
        block=block.group(1) if block else None,
        backward='transpose(' in op_name, shape=shape,
        bytes=math.prod(shape) * _BYTES.get(dtype, 4),
        pairs=frozenset((int(a), int(b))
                        for a, b in re.findall(r'\{(\d+),(\d+)\}', pairs))))
  return out


def collectives(config, use_halo: bool) -> tuple[dict, str]:
  # A fresh step, traced inside the switch (parallel/comparison.py).
  with comparison.partitioner_only(not use_halo):
    _, compiled = compile_train_step(config, NUM_CLASSES)
  hlo = compiled.as_text()
  return hlo_collectives.parse_collectives(hlo), hlo


def exchange_bytes(model, clip_shape, data: int) -> dict[str, int]:
  """Bytes one device sends per step through the shifts, from the shapes:
  per shifted block and direction one frame's fold channels of its clips,
  forward; the backward sends the cotangents of the same frames back."""
  per_block = {
      block: math.prod(halo_shape(model, shape, data)) * 4
      for block, shape in shift_inputs(model, clip_shape).items()}
  directions = 1 if model.shift == 'right' else 2
  forward = directions * sum(per_block.values())
  return {'blocks': len(per_block), 'per_block': per_block,
          'forward': forward, 'backward': forward}


def mib(n: float) -> str:
  return f'{n / 2**20:.2f} MiB' if n >= 2**16 else f'{n / 2**10:.1f} KiB'


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--frames', type=int, default=8)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--width', type=int, default=8)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--data', type=int, default=2)
  parser.add_argument('--time', type=int, default=4)
  parser.add_argument('--full_batch', type=int, default=8,
                      help='global batch of the full-size estimate')
  args = parser.parse_args()
  config = tsm_config(data=args.data, time=args.time, frames=args.frames,
                      size=args.size, width=args.width, batch=args.batch)
  print(f'TSM-R50 width {args.width}, {args.frames}x{args.size}², batch '
        f'{args.batch}, mesh data {args.data} x time {args.time}; per '
        'device, static count x result bytes\n')
  rows = {}
  for name, use in (('halo shift (vidjax)', True),
                    ('partitioner alone', False)):
    rows[name] = collectives(config, use)
  kinds = [k for k in hlo_collectives.COLLECTIVES
           if any(k in found for found, _ in rows.values())]
  print('| | ' + ' | '.join(kinds) + ' |')
  print('|---|' + '---|' * len(kinds))
  for name, (found, _) in rows.items():
    cells = [f'{found[k]["count"]} ×, {mib(found[k]["bytes"])}'
             if k in found else 'none' for k in kinds]
    print(f'| {name} | ' + ' | '.join(cells) + ' |')

  # The halo step's permutes, block by block.
  model = setup_lib.make_model(config, NUM_CLASSES,
                               jax.make_mesh((args.data, args.time),
                                             ('data', 'time')))
  clip = (args.batch, args.frames, args.size, args.size, 3)
  inputs = shift_inputs(model, clip)
  found = permutes(rows['halo shift (vidjax)'][1])
  print('\n| shifted block | input (whole clip) | permuted, forward | '
        'backward |')
  print('|---|---|---|---|')
  for block, shape in inputs.items():
    fwd = sorted(p.shape for p in found if p.block == block
                 and not p.backward)
    bwd = sorted(p.shape for p in found if p.block == block and p.backward)
    print(f'| {block} | {list(shape)} | {len(fwd)} × {list(fwd[0])} | '
          f'{len(bwd)} × {list(bwd[0])} |' if fwd and bwd else
          f'| {block} | {list(shape)} | {fwd} | {bwd} |')
  stray = [p for p in found if p.block not in inputs]
  print(f'\n{len(found)} collective-permutes, {len(stray)} not from a '
        'shift')

  # What a real step sends: shapes only, no compile.
  full = tsm_config(data=args.data, time=args.time, frames=8, size=224,
                    width=64, batch=args.full_batch)
  full_model = setup_lib.make_model(full, NUM_CLASSES, jax.make_mesh(
      (args.data, args.time), ('data', 'time')))
  cost = exchange_bytes(full_model, (args.full_batch, 8, 224, 224, 3),
                        args.data)
  clips = args.full_batch // args.data
  print(f'\nTSM-R50 8x224², global batch {args.full_batch} ({clips} clips '
        f'per device), mesh {args.data} x {args.time}: {cost["blocks"]} '
        f'shifted blocks, per device per step {mib(cost["forward"])} '
        f'forward + {mib(cost["backward"])} backward '
        f'({mib(cost["forward"] / clips / 2)} per clip per direction, '
        'forward)')
  for block, n in cost['per_block'].items():
    print(f'  {block}: {mib(n)} per direction')


if __name__ == '__main__':
  main()
