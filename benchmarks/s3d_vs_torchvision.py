"""vidjax S3D against torchvision's S3D on this CPU: inference and training.

  bash run.sh python benchmarks/s3d_vs_torchvision.py            # defaults
  bash run.sh python benchmarks/s3d_vs_torchvision.py --batch=4 --frames=32

Same model (`s3d_torchvision` is torchvision's layout, parameter for
parameter), same batch and clip, float32. "train" is one forward+backward with
batch-norm in training mode (the optimizer update is left out on both sides:
it is not where the frameworks differ). Each XLA flag setting runs in its own
subprocess, because XLA reads XLA_FLAGS once at start-up; that subprocess
builds both models and alternates vidjax and torch steps, so both run under
the same load.
Prints milliseconds per step and the ratio torch / vidjax (> 1: vidjax is
faster). Absolute figures want a quiet machine (a busy core halves them);
the alternation keeps the ratio honest when it is not.
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
# XLA:CPU settings compared. XLA:CPU can hand fusions of some kinds to the
# YNNPACK library; `--xla_cpu_experimental_ynn_fusion_type` picks which, and an
# explicit list replaces the default one (which holds convolutions, slower
# than XLA's own Eigen convs here). 'ynn' gives YNNPACK the dots (1×1×1
# convs) and the reductions (BN statistics); 'ynn+eltwise' also elementwise
# fusions, whose inputs YNNPACK wants materialised at full size (BN's
# per-channel factors, ReLU's zeros), which costs more than it saves.
XLA_SETTINGS = {
    'default': '',
    'ynn': '--xla_cpu_experimental_ynn_fusion_type=dot,reduce',
    'ynn+eltwise': '--xla_cpu_experimental_ynn_fusion_type=dot,eltwise,reduce',
    # 'ynn' with glibc's allocator told to keep freed memory (one arena, no
    # mmap, no trimming) for both frameworks. By default every step maps
    # fresh pages for its large buffers and the kernel zeroes them (~1 GB a
    # step on either side); kept, they are reused. PyTorch gains much more
    # from this than XLA, whose many small scratch allocations then contend
    # for the single arena.
    'ynn+keepmem': '--xla_cpu_experimental_ynn_fusion_type=dot,reduce',
}
# Extra environment per setting (both frameworks run under it).
SETTING_ENV = {
    'ynn+keepmem': {'GLIBC_TUNABLES': 'glibc.malloc.arena_max=1:'
                                      'glibc.malloc.mmap_max=0:'
                                      'glibc.malloc.trim_threshold=17179869184'},
}


def _parse():
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--batch', type=int, default=2)
  p.add_argument('--frames', type=int, default=16)
  # torchvision's head (a 2×7×7 VALID pool) needs frames of >= 209 px.
  p.add_argument('--size', type=int, default=224)
  p.add_argument('--iters', type=int, default=5)
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--settings', default=','.join(XLA_SETTINGS),
                 help='comma-separated XLA flag settings to run, of: '
                 + ', '.join(XLA_SETTINGS))
  p.add_argument('--one_setting', action='store_true', help=argparse.SUPPRESS)
  return p.parse_args()


def _interleaved(pairs, iters, warmup):
  """Times each (vidjax, torch) pair of steps alternately, `iters` rounds.

  Alternating keeps both sides under the same machine load, so the ratio
  holds even when other work comes and goes; the ratio reported is the
  median of the per-round ratios.
  """
  for fn in pairs:
    for _ in range(warmup):
      fn()
  rounds = []
  for _ in range(iters):
    times = []
    for fn in pairs:
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    rounds.append(times)
  rounds = np.array(rounds)
  return {'vidjax_ms': 1e3 * float(np.median(rounds[:, 0])),
          'torch_ms': 1e3 * float(np.median(rounds[:, 1])),
          'ratio': float(np.median(rounds[:, 1] / rounds[:, 0]))}


def jax_steps(args):
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
  return (lambda: jax.block_until_ready(forward(variables, video)),
          lambda: jax.block_until_ready(train_grads(variables, video,
                                                    labels)),
          compile_s)


def torch_steps(args):
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

  return infer, train, torch.get_num_threads()


def bench_pair(args) -> dict:
  """In one process (one XLA flag setting): vidjax and torch, alternated."""
  jax_infer, jax_train, compile_s = jax_steps(args)
  torch_infer, torch_train, threads = torch_steps(args)
  return {'infer': _interleaved((jax_infer, torch_infer), args.iters,
                                args.warmup),
          'train': _interleaved((jax_train, torch_train), args.iters,
                                args.warmup),
          'compile_s': compile_s, 'torch_threads': threads}


def main():
  args = _parse()
  if args.one_setting:
    print(json.dumps(bench_pair(args)))
    return
  clip = f'{args.batch}×{args.frames}×{args.size}²'
  print(f'S3D (torchvision layout, 8.3M params), batch×T×HW = {clip}, '
        f'median of {args.iters} alternating rounds after {args.warmup} '
        f'warm-up, {os.cpu_count()} CPUs', flush=True)
  print(f'{"setting":11s} {"":6s} {"vidjax ms":>10s} {"torch ms":>10s} '
        f'{"torch/vidjax":>13s}')
  names = args.settings.split(',')
  unknown = sorted(set(names) - set(XLA_SETTINGS))
  if unknown:
    sys.exit(f'unknown --settings {", ".join(unknown)}; known: '
             f'{", ".join(XLA_SETTINGS)}')
  for name in names:
    flags = XLA_SETTINGS[name]
    env = dict(os.environ, XLA_FLAGS=flags, TF_CPP_MIN_LOG_LEVEL='2',
               **SETTING_ENV.get(name, {}))
    proc = subprocess.run(
        [sys.executable, __file__, '--one_setting', f'--batch={args.batch}',
         f'--frames={args.frames}', f'--size={args.size}',
         f'--iters={args.iters}', f'--warmup={args.warmup}'],
        env=env, capture_output=True, text=True, check=False)
    if proc.returncode:
      sys.exit(f'benchmark ({name}) failed:\n{proc.stderr[-2000:]}')
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind in ('infer', 'train'):
      m = r[kind]
      print(f'{name:11s} {kind:6s} {m["vidjax_ms"]:10.1f} {m["torch_ms"]:10.1f} '
            f'{m["ratio"]:13.2f}', flush=True)
  print(f'torch/vidjax > 1: vidjax is faster. torch threads: '
        f'{r["torch_threads"]}; vidjax compile: {r["compile_s"]:.0f} s.')


if __name__ == '__main__':
  main()
