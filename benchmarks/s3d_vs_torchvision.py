"""vidjax S3D against torchvision's S3D on this CPU: inference and training.

  bash run.sh python benchmarks/s3d_vs_torchvision.py            # defaults
  bash run.sh python benchmarks/s3d_vs_torchvision.py --batch=4 --frames=32

Same model (`s3d_torchvision` is torchvision's layout, parameter for
parameter), same batch and clip, float32. "train" is one forward+backward with
batch-norm in training mode (the optimizer update is left out on both sides:
it is not where the frameworks differ). torchvision runs in this process;
vidjax runs in one subprocess per XLA flag setting, because XLA reads
XLA_FLAGS once at start-up. Prints milliseconds per step and the ratio
torch / vidjax (> 1: vidjax is faster). Run it on a quiet machine: a busy
core halves every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA:CPU settings compared. 'ynn' routes dots, convs and elementwise
# fusions through the YNNPACK backend, which is what makes folded 2D convs
# fast on CPU.
XLA_SETTINGS = {
    'default': '',
    'ynn': '--xla_cpu_experimental_ynn_fusion_type=dot,eltwise',
}


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--frames', type=int, default=16)
  # torchvision's head (a 2×7×7 VALID pool) needs frames of >= 209 px.
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--iters', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--jax_only', action='store_true', help=argparse.SUPPRESS)
  return p.parse_args()


def _time(fn, iters, warmup):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(iters):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def bench_jax(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top

  model = create_model('s3d_torchvision', num_classes=400)
  video = jax.random.normal(
      jax.random.key(0), (args.batch, args.frames, args.size, args.size, 3))
  labels = jnp.arange(args.batch) % 400
  variables = jax.jit(model.init)(jax.random.key(1), video)

  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))

  @jax.jit
  def train_grads(v, x, y):
    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': v['batch_stats']}, x, train=True,
          mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return loss.mean(), updates
    return jax.grad(loss_fn, has_aux=True)(v['params'])

  start = time.perf_counter()
  jax.block_until_ready(forward(variables, video))
  jax.block_until_ready(train_grads(variables, video, labels))
  compile_s = time.perf_counter() - start
  return {
      'infer_ms': _time(
          lambda: jax.block_until_ready(forward(variables, video)),
          args.iters, args.warmup),
      'train_ms': _time(
          lambda: jax.block_until_ready(train_grads(variables, video, labels)),
          args.iters, args.warmup),
      'compile_s': compile_s,
  }


def bench_torch(args) -> dict:
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  torch.manual_seed(0)
  model = torchvision.models.video.s3d(num_classes=400)
  video = torch.randn(args.batch, 3, args.frames, args.size, args.size)
  labels = torch.arange(args.batch) % 400

  def infer():
    model.eval()
    with torch.no_grad():
      model(video)

  def train():
    model.train()
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(video), labels).backward()

  return {'infer_ms': _time(infer, args.iters, args.warmup),
          'train_ms': _time(train, args.iters, args.warmup),
          'threads': torch.get_num_threads()}


def main():
  args = _parse()
  if args.jax_only:
    print(json.dumps(bench_jax(args)))
    return
  clip = f'{args.batch}×{args.frames}×{args.size}²'
  print(f'S3D (torchvision layout, 8.3M params), batch×T×HW = {clip}, '
        f'median of {args.iters} after {args.warmup} warm-up, '
        f'{os.cpu_count()} CPUs', flush=True)
  results = {}
  for name, flags in XLA_SETTINGS.items():
    env = dict(os.environ, XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL='2')
    proc = subprocess.run(
        [sys.executable, __file__, '--jax_only', f'--batch={args.batch}',
         f'--frames={args.frames}', f'--size={args.size}',
         f'--iters={args.iters}', f'--warmup={args.warmup}'],
        env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
      sys.exit(f'vidjax benchmark ({name}) failed:\n{proc.stderr[-2000:]}')
    results[f'vidjax[{name}]'] = json.loads(proc.stdout.strip().splitlines()[-1])
  results['torch'] = bench_torch(args)
  torch_r = results['torch']
  print(f'{"":16s} {"infer ms":>10s} {"train ms":>10s} {"infer ×":>8s} '
        f'{"train ×":>8s}')
  for name, r in results.items():
    print(f'{name:16s} {r["infer_ms"]:10.1f} {r["train_ms"]:10.1f} '
          f'{torch_r["infer_ms"] / r["infer_ms"]:8.2f} '
          f'{torch_r["train_ms"] / r["train_ms"]:8.2f}')
  print('× = torch time / vidjax time (> 1: vidjax faster). '
        f'torch threads: {torch_r["threads"]}.')


if __name__ == '__main__':
  main()
