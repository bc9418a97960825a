"""TimeSformer sequence-sharded: the collectives of its train step, per device.

Compiles the TimeSformer train step (vidjax.train.setup.build, what the
trainer runs) on simulated CPU devices for a (data, time) mesh and prints,
as a markdown table, the collectives of each compiled HLO by kind: static
count and result bytes per device. Three programs:

  divided, all-to-all    the temporal step's time split swapped for a patch
                         split and back (vidjax/models/timesformer.py)
  divided, partitioner   the same inside comparison.partitioner_only():
                         the partitioner alone places the temporal attention
  joint                  joint space-time attention, left to the partitioner

Then, from shapes, what the all-to-all scheme moves per device per train
step at Base (8×224²) and L (96×224²): 4 swaps per block (2 forward, 2 in
the backward pass), each the device's [N/data, T/time, S, D] patch tokens;
and what the partitioner's all-gathers and all-reduces of K and V would be
at the same size (its pattern read off the tiny HLO). `--check` also
compiles one block at Base width and 8×224² and compares its HLO with the
formula. `--tpu=v5e:2x4` has libtpu compile the full-size train steps
(Base 8×224², with `--tpu_l` also L 96×224²; bf16 compute, one clip per
chip) for that topology, not attached, and prints their collectives too.
No timing: this is about what the mesh does (docs/timesformer.md).

  bash run.sh python benchmarks/timesformer_sharding_hlo.py           # ~30 s
  bash run.sh python benchmarks/timesformer_sharding_hlo.py --check   # + ~1 min
  bash run.sh python benchmarks/timesformer_sharding_hlo.py --tpu=v5e:2x4 \
      --tpu_l                                             # + ~10 min
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

import jax.numpy as jnp  # pylint: disable=wrong-import-position
import ml_collections  # pylint: disable=wrong-import-position

from benchmarks import timed_steps  # pylint: disable=wrong-import-position
from configs import demo  # pylint: disable=wrong-import-position
from vidjax.parallel import comparison  # pylint: disable=wrong-import-position
from vidjax.parallel import mesh as mesh_lib  # pylint: disable=wrong-import-position
from vidjax.tools.aot import collectives as hlo_collectives  # pylint: disable=wrong-import-position
from vidjax.tools.aot import topology as topology_lib  # pylint: disable=wrong-import-position

TINY = dict(embed_dim=16, depth=2, num_heads=2, patch_size=8, image_size=32,
            num_frames=8, drop_path_rate=0.0)
KINDS = hlo_collectives.COLLECTIVES
MiB = 2 ** 20


def config_for(scheme, model, frames, size, batch, data, time):
  config = demo.get_config()
  config.model_name = 'timesformer'
  config.model = ml_collections.ConfigDict(dict(scheme=scheme, **model))
  config.data.num_frames = frames
  config.data.crop_size = size
  config.batch_size = batch
  config.mesh = {'data': data, 'time': time}
  return config


def compiled_collectives(config, all_to_all=True, devices=None,
                         **overrides) -> dict:
  """The collectives of config's compiled train step (and, on TPU
  devices, its HBM total per chip under 'memory')."""
  # A fresh step, traced inside the switch (parallel/comparison.py).
  with comparison.partitioner_only(not all_to_all):
    mesh = mesh_lib.make_mesh(config.mesh, devices=devices)
    _, compiled = timed_steps.compile_train_step(config, 400, mesh,
                                                 **overrides)
  found = hlo_collectives.parse_collectives(compiled.as_text())
  if devices is not None:
    m = compiled.memory_analysis()
    found['memory'] = (m.argument_size_in_bytes + m.output_size_in_bytes
                       - m.alias_size_in_bytes + m.temp_size_in_bytes
                       + m.generated_code_size_in_bytes)
  return found


def cell(found, kind):
  if kind not in found:
    return '—'
  entry = found[kind]
  size = entry['bytes']
  text = (f'{size / MiB:.2f} MiB' if size >= MiB / 10 else
          f'{size / 2 ** 10:.1f} KiB')
  return f'{entry["count"]} × , {text}'.replace(' × ,', ' ×,')


def table(rows: dict) -> str:
  kinds = [k for k in KINDS if any(k in r for r in rows.values())]
  memory = any('memory' in r for r in rows.values())
  lines = ['| | ' + ' | '.join(kinds) + (' | HBM per chip' if memory else '')
           + ' |', '|---|' + '---|' * (len(kinds) + memory)]
  for name, found in rows.items():
    extra = (f' | {found["memory"] / 2 ** 30:.2f} GiB' if memory else '')
    lines.append(f'| {name} | ' + ' | '.join(cell(found, k) for k in kinds)
                 + extra + ' |')
  return '\n'.join(lines)


def projected(frames, size=224, patch=16, dim=768, depth=12, clips=1,
              data=1, time=4, bytes_per=4) -> dict:
  """Per device per train step, from shapes (clips = N/data per device)."""
  s = (size // patch) ** 2
  if frames % time or s % time:
    return {}
  swap = clips * s * (frames // time) * dim * bytes_per   # [N/d, T/t, S, D]
  gathered = clips * s * frames * dim * bytes_per          # K or V, whole T
  return {
      'S': s, 'swap': swap,
      'all-to-all': 4 * depth * swap,                       # 2 fwd + 2 bwd
      'forward': 2 * depth * swap,
      # The partitioner alone (the tiny HLO's pattern): K and V all-gathered
      # along T in every block's forward, dK and dV all-reduced backward.
      'all-gather': 2 * depth * gathered,
      'all-reduce': 2 * depth * gathered,
  }


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data', type=int, default=2)
  parser.add_argument('--time', type=int, default=4)
  parser.add_argument('--batch', type=int, default=4)
  parser.add_argument('--check', action='store_true',
                      help='also compile one Base-width block at 8x224² '
                      'and compare its all-to-alls with the formula')
  parser.add_argument('--tpu', default='',
                      help='a libtpu topology, e.g. v5e:2x4: also compile '
                      'the full-size Base step for it (bf16, one clip per '
                      'chip on the --data x --time mesh)')
  parser.add_argument('--tpu_l', action='store_true',
                      help='with --tpu, TimeSformer-L (96 frames) too')
  args = parser.parse_args()
  mesh = dict(data=args.data, time=args.time)
  print(f'TimeSformer D {TINY["embed_dim"]}, depth {TINY["depth"]}, '
        f'{TINY["num_heads"]} heads, patch {TINY["patch_size"]}, '
        f'{TINY["num_frames"]}x{TINY["image_size"]}², batch {args.batch}, '
        f'float32, mesh data {args.data} x time {args.time}; per device: '
        'static count x result bytes\n')
  tiny = lambda scheme: config_for(  # noqa: E731
      scheme, TINY, TINY['num_frames'], TINY['image_size'], args.batch,
      **mesh)
  rows = {
      'divided, all-to-all (vidjax)': compiled_collectives(
          tiny('divided_space_time')),
      'divided, partitioner alone': compiled_collectives(
          tiny('divided_space_time'), all_to_all=False),
      'joint (partitioner)': compiled_collectives(tiny('joint_space_time')),
  }
  print(table(rows))

  print('\nThe all-to-all scheme at full size, from shapes: per device per '
        'train step, float32, one clip per device (scale by clips per '
        'device; bf16 compute halves it)\n')
  print('| model | mesh time | S | per swap | forward (2/block) | '
        'step (4/block) | partitioner alone: all-gather K,V + all-reduce '
        'dK,dV |')
  print('|---|---|---|---|---|---|---|')
  for name, frames in (('Base 8×224²', 8), ('L 96×224²', 96)):
    for time in (2, 4):
      p = projected(frames, time=time)
      if not p:
        print(f'| {name} | {time} | — | S or T does not divide | | | |')
        continue
      print(f'| {name} | {time} | {p["S"]} | {p["swap"] / MiB:.2f} MiB | '
            f'{p["forward"] / MiB:.1f} MiB | '
            f'**{p["all-to-all"] / MiB:.1f} MiB** | '
            f'{p["all-gather"] / MiB:.0f} + {p["all-reduce"] / MiB:.0f} MiB |')

  if args.check:
    # One block at Base width, 8x224², one clip per device: the compiled
    # HLO against the formulas above.
    base = dict(embed_dim=768, depth=1, num_heads=12, patch_size=16,
                image_size=224, num_frames=8, drop_path_rate=0.0)
    p = projected(8, depth=1, time=args.time)
    big = lambda scheme: config_for(  # noqa: E731
        scheme, base, 8, 224, args.data, **mesh)
    checks = {
        'divided, all-to-all (vidjax)': compiled_collectives(
            big('divided_space_time')),
        'divided, partitioner alone': compiled_collectives(
            big('divided_space_time'), all_to_all=False),
        'joint (partitioner)': compiled_collectives(big('joint_space_time')),
    }
    print(f'\n--check: one Base block (D 768, 12 heads), 8x224², one clip '
          f'per device on mesh {args.data} x {args.time}, compiled:\n')
    print(table(checks))
    print(f'\nformula for this block: all-to-all 4 x {p["swap"] / MiB:.2f} '
          f'= {p["all-to-all"] / MiB:.2f} MiB; the partitioner alone: '
          f'all-gather of K, V {p["all-gather"] / MiB:.2f} MiB, their '
          f'gradients all-reduced {p["all-reduce"] / MiB:.2f} MiB (plus the '
          'parameter gradients)')
  if args.tpu:
    topology = topology_lib.load_topology(args.tpu)
    runs = [('Base 8×224²', 8)]
    if args.tpu_l:
      runs.append(('L 96×224²', 96))
    rows = {}
    tpu = dict(devices=topology.devices, dtype=jnp.bfloat16)
    for name, frames in runs:
      full = dict(embed_dim=768, depth=12, num_heads=12, patch_size=16,
                  image_size=224, num_frames=frames, drop_path_rate=0.0)
      schemes = [('divided, all-to-all (vidjax)', 'divided_space_time', True),
                 ('divided, partitioner alone', 'divided_space_time', False)]
      if frames == 8:   # Joint attention over 1 + 96·196 tokens: not here.
        schemes.append(('joint (partitioner)', 'joint_space_time', True))
      for label, scheme, all_to_all in schemes:
        rows[f'{name} {label}'] = compiled_collectives(
            config_for(scheme, full, frames, 224, args.data, **mesh),
            all_to_all=all_to_all, **tpu)
    print(f'\n--tpu: libtpu compiled for {args.tpu} (not attached), mesh '
          f'{args.data} x {args.time}, one clip per chip, bf16 compute, '
          'float32 state; per chip:\n')
    print(table(rows))


if __name__ == '__main__':
  main()
