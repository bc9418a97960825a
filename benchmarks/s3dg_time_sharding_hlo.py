"""What time sharding costs S3D-G in collectives: halo exchange vs partitioner.

Compiles the S3D-G train step on simulated CPU devices for a (data, time)
mesh twice, with vidjax's shard_map halo exchange (vidjax/parallel/halo.py)
and inside `comparison.partitioner_only()` (the partitioner alone), and
prints the collectives of each compiled HLO by kind: count and bytes per
device. No timing: this is about what the mesh does, read from the HLO
(docs/scale.md).

  bash run.sh python benchmarks/s3dg_time_sharding_hlo.py     # tiny, ~1 min
  bash run.sh python benchmarks/s3dg_time_sharding_hlo.py --frames=64 \
      --size=224 --depth=1.0 --batch=8                         # full size, slow
"""
import argparse
import os
import sys

os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
    os.environ.get('XLA_FLAGS', ''),
    '--xla_force_host_platform_device_count=8']))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from benchmarks import timed_steps  # pylint: disable=wrong-import-position
from configs import demo  # pylint: disable=wrong-import-position
from vidjax.parallel import comparison  # pylint: disable=wrong-import-position
from vidjax.tools.aot import collectives as hlo_collectives  # pylint: disable=wrong-import-position


def collectives(args, use_halo: bool) -> dict:
  config = demo.get_config()
  config.model.depth_multiplier = args.depth
  config.model.min_depth = 8
  config.data.num_frames = args.frames
  config.data.crop_size = args.size
  config.batch_size = args.batch
  config.mesh = {'data': args.data, 'time': args.time}
  # A fresh step, traced inside the switch (parallel/comparison.py).
  with comparison.partitioner_only(not use_halo):
    _, compiled = timed_steps.compile_train_step(config, 400)
  return hlo_collectives.parse_collectives(compiled.as_text())


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--frames', type=int, default=16)
  parser.add_argument('--size', type=int, default=32)
  parser.add_argument('--depth', type=float, default=0.125)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--data', type=int, default=2)
  parser.add_argument('--time', type=int, default=4)
  args = parser.parse_args()
  print(f'S3D-G depth {args.depth}, {args.frames}x{args.size}², batch '
        f'{args.batch}, mesh data {args.data} x time {args.time}')
  rows = {name: collectives(args, use) for name, use in
          (('halo exchange (vidjax)', True), ('partitioner alone', False))}
  kinds = sorted({k for r in rows.values() for k in r})
  print(f'{"":24s}' + ''.join(f'{k:>28s}' for k in kinds))
  for name, found in rows.items():
    cells = ''.join(
        f'{found[k]["count"]:>8d} x, {found[k]["bytes"] / 2**20:>9.2f} MiB'
        if k in found else f'{"-":>28s}' for k in kinds)
    print(f'{name:24s}{cells}')


if __name__ == '__main__':
  main()
