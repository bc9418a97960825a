"""The demo's train step on one device against meshes, in float64 or float32.

One train step (`setup.train_step`) of configs/demo.py's model on a batch
saved from the demo's input (an .npz of 'video', 'label', 'mask', e.g. the
first batch of `vidjax.data.input_shards.train_batches(demo config, 0)`),
on one device and on each (data, time) mesh of 8 simulated CPU devices.
Prints, against one device, the relative L2 difference of every endpoint's
activations, of the momentum (the step's gradient plus weight decay: the
learning rate of step 0 is 0), of the BN statistics and of the loss, and
how many max-pool windows changed their winner. `--perturb=6e-8` adds a
one-device run with the clips multiplied by 1 + perturb·noise: the
gradient's sensitivity to one float32 rounding, with no sharding at all.
No timing (docs/scale.md, "Sharded against unsharded in float64").

  bash run.sh python benchmarks/sharded_float64.py --batch=batch.npz \
      --dtype=float64 --meshes=8x1,4x2,2x4 --perturb=6e-8
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

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import demo  # pylint: disable=wrong-import-position
from vidjax.parallel import mesh as mesh_lib  # pylint: disable=wrong-import-position
from vidjax.train import setup as setup_lib  # pylint: disable=wrong-import-position

NUM_CLASSES = 13  # moving_shapes.
# The max-pools of S3D-G: (name, the endpoint it reads, window, strides).
POOLS = (('MaxPool_2a', 'Conv2d_1a_7x7', (1, 3, 3), (1, 2, 2)),
         ('MaxPool_3a', 'Conv2d_2c_3x3', (1, 3, 3), (1, 2, 2)),
         ('MaxPool_4a', 'Mixed_3c', (3, 3, 3), (2, 2, 2)),
         ('MaxPool_5a', 'Mixed_4f', (2, 2, 2), (2, 2, 2))) + tuple(
             # Each block's Branch_3 pools the block's input.
             (f'{block}/Branch_3', source, (3, 3, 3), (1, 1, 1))
             for block, source in (
                 ('Mixed_3b', 'MaxPool_3a_3x3'), ('Mixed_3c', 'Mixed_3b'),
                 ('Mixed_4b', 'MaxPool_4a_3x3'), ('Mixed_4c', 'Mixed_4b'),
                 ('Mixed_4d', 'Mixed_4c'), ('Mixed_4e', 'Mixed_4d'),
                 ('Mixed_4f', 'Mixed_4e'), ('Mixed_5b', 'MaxPool_5a_2x2'),
                 ('Mixed_5c', 'Mixed_5b')))


def run(mesh_name, batch, dtype, kernels):
  """One step: {'feat/…', 'momentum/…', 'stats/…', 'loss'} on the host."""
  config = demo.get_config()
  config.model.kernels = kernels
  if mesh_name == '1':
    config.mesh = {'data': 1, 'time': 1}
    mesh = mesh_lib.make_mesh(config.mesh, devices=jax.devices()[:1])
  else:
    data, time = map(int, mesh_name.split('x'))
    config.mesh = {'data': data, 'time': time}
    mesh = None
  setup = setup_lib.build(config, NUM_CLASSES, mesh)
  rng = jax.random.key(0)
  cast = lambda t: jax.tree.map(  # noqa: E731
      lambda x: x.astype(dtype) if x.dtype == np.float32 else x, t)
  with setup.context():
    state = setup.init(rng)
    # The layer stores BN statistics in float32 whatever it computes in.
    state = cast(state).replace(batch_stats=state.batch_stats)
    video = batch['video'].astype(dtype)
    batch = mesh_lib.to_global_batch(dict(batch, video=video),
                                     setup.batch_sharding)
    (_, features), _ = jax.jit(lambda s, v: setup.model.apply(
        {'params': s.params, 'batch_stats': s.batch_stats}, v, train=True,
        mutable=['batch_stats'], return_features=True,
        rngs={'dropout': jax.random.fold_in(rng, 0)}))(state, batch['video'])
    new, sums = setup.train_step(state, batch, rng)
  out = {f'feat/{k}': np.asarray(v)
         for k, v in jax.device_get(features).items()}
  new = jax.device_get(new)
  for prefix, tree in (('momentum', new.opt_state),
                       ('stats', new.batch_stats)):
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
      if np.ndim(leaf):
        out[prefix + jax.tree_util.keystr(path)] = np.asarray(leaf)
  out['loss'] = np.asarray(jax.device_get(sums)['loss'])
  return out


def relative(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


def pool_windows(x, window, strides):
  """[..., taps] of each window of a TF-SAME max-pool, padded with -inf."""
  pads = [(0, 0)]
  for n, k, s in zip(x.shape[1:4], window, strides):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pads.append((total // 2, total - total // 2))
  x = np.pad(x.astype(np.float64), pads + [(0, 0)], constant_values=-np.inf)
  w = np.lib.stride_tricks.sliding_window_view(x, window, axis=(1, 2, 3))
  w = w[:, ::strides[0], ::strides[1], ::strides[2]]
  return w.reshape(*w.shape[:5], -1)


def report(name, got, ref):
  print(f'\n{name} against one device (relative L2):')
  for key in ref:
    if key.startswith('feat/'):
      print(f'  {key[5:]:16s} {relative(got[key], ref[key]):.1e}')
  for prefix in ('momentum', 'stats'):
    keys = [k for k in ref if k.startswith(prefix)]
    total = np.sqrt(
        sum(np.sum((got[k].astype(float) - ref[k]) ** 2) for k in keys)
        / sum(np.sum(ref[k].astype(float) ** 2) for k in keys))
    worst = max(keys, key=lambda k: relative(got[k], ref[k]))
    print(f'  {prefix}: all leaves {total:.1e}, worst leaf '
          f'{relative(got[worst], ref[worst]):.1e} ({worst})')
  print(f'  loss {relative(got["loss"], ref["loss"]):.1e}')
  for pool, key, window, strides in POOLS:
    a = pool_windows(ref[f'feat/{key}'], window, strides)
    top = np.sort(a, -1)
    tied = top[..., -1] == top[..., -2]
    nonzero_ties = tied & (top[..., -1] != 0)
    flipped = (np.argmax(a, -1) != np.argmax(
        pool_windows(got[f'feat/{key}'], window, strides), -1))
    print(f'  {pool}: {tied.mean():.1%} of windows tied '
          f'({nonzero_ties.sum()} at a non-zero maximum), winner changed in '
          f'{flipped.sum()}')


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--batch', required=True)
  parser.add_argument('--dtype', default='float64',
                      choices=('float64', 'float32'))
  parser.add_argument('--kernels', default='custom',
                      choices=('custom', 'plain'))
  parser.add_argument('--meshes', default='8x1,4x2,2x4')
  parser.add_argument('--perturb', type=float, default=0.0)
  args = parser.parse_args()
  if args.dtype == 'float64':
    jax.config.update('jax_enable_x64', True)
  dtype = np.dtype(args.dtype)
  batch = dict(np.load(args.batch))
  reference = run('1', batch, dtype, args.kernels)
  for mesh_name in args.meshes.split(','):
    report(f'mesh {mesh_name}', run(mesh_name, batch, dtype, args.kernels),
           reference)
  if args.perturb:
    noise = np.random.default_rng(1).standard_normal(batch['video'].shape)
    perturbed = dict(batch, video=batch['video'].astype(np.float64)
                     * (1 + args.perturb * noise))
    report(f'one device, clips × (1 + {args.perturb:g}·noise)',
           run('1', perturbed, dtype, args.kernels), reference)


if __name__ == '__main__':
  main()
