"""Training-clip throughput per CPU core: vidjax's JPEG TFRecords vs PyAV mp4.

  bash run.sh python benchmarks/input_pipeline.py      # 8 videos, 48 clips
  bash run.sh python benchmarks/input_pipeline.py --videos=4 --clips=32 \
      --rounds=2 --json=/tmp/input.json               # ~3.5 min on 2 cores
  bash run.sh python benchmarks/input_pipeline.py --threads=1 --rounds=3

Both sides make the same training clips from the same synthetic videos
(Kinetics-like: 340x256, i.e. short side 256, 25 fps, 10 s, a panning
textured background with moving shapes):

* vidjax: DMVR SequenceExample TFRecords, one JPEG (quality 90, as the
  builders write) per frame, through `vidjax.data.pipeline` with the
  Kinetics S3D-G config's training steps: random clip, random 224² crop
  decoded as a window (`decode_and_crop_jpeg`), flip, Inception
  normalisation, batches of 8.
* PyTorch-style ('pyav'): mp4 (H.264, x264 defaults but crf 23, so one key
  frame per 10 s clip as in FFmpeg-trimmed Kinetics files), decoded with
  PyAV in the `__getitem__` of a `torch.utils.data.Dataset` as PySlowFast's
  PyAV path does: seek to the key frame before a random start, decode up to
  the last sampled frame, convert the sampled frames to RGB numpy, random
  224² crop, flip, normalise as float32, and batches of 8 by a `DataLoader`
  (num_workers=0: the loop runs in the side's process, so its CPU time is
  measurable).

Measured with benchmarks/harness.py. The parent process generates the data
once (into a temporary directory it removes at the end, or into --keep),
then for each clip setting and thread setting runs the two loaders as
sides: each a fresh process of this script (`--side=vidjax|pyav
--data=DIR ...`), alone on the machine, --rounds times, alternating vidjax,
pyav, vidjax, ... A side builds its loader, takes --warmup batches (the
first builds tf.data's graph and fills its buffers; the harness reports
them apart) and then times --clips / --batch steps, a step being one
`next(batches)` of a batch. Besides the harness's wall-clock step times the
side records the CPU time of every step (`time.process_time`: user + system,
all threads of the process) in its result's `info`, from which the parent
prints clips per CPU-second, "per core": a busy machine slows the wall clock
but barely that figure. Both figures are printed, with the harness's
per-side medians and spreads, thread counts, environment and the machine's
matmul rate.

Threads (--threads): '1' runs tf.data with a private thread pool of one
thread, and PyAV/FFmpeg and torch at one thread each; 'default' leaves each
library its own default (tf.data's shared pool, FFmpeg's automatic frame
threading, torch's intra-op threads).

Clips: 16x224² with stride 4 (2.4 s; SlowFast/X3D-style) and 64x224² with
stride 1 (2.56 s; I3D/S3D-G), and, vidjax only, 8 TSN segments over the
whole video with multi-scale crops (TSN/TSM's clip). The JPEG side decodes
only the sampled frames; the mp4 side must decode every frame from the key
frame to the last sampled one: that asymmetry is the point of storing
JPEGs. Last, a table of the host cores a TPU v5e-8 would need at these
per-core rates.

Until 2026-12-02 this script timed both loaders in ONE process, one after the
other; benchmarks/README.md keeps that table, labelled as such.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import sys
import tempfile
import time

_START = time.perf_counter()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
# vidjax.data.formats imports jax, and with jax[tpu] installed (the test
# environment) JAX would try to open a TPU (vidjax/platform.py).
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from benchmarks import harness  # pylint: disable=g-import-not-at-top,wrong-import-position
from vidjax.errors import VidjaxError  # pylint: disable=g-import-not-at-top,wrong-import-position

HEIGHT, WIDTH = 256, 340
CROP = 224
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
SETTINGS = ((16, 4), (64, 1))  # (frames, stride)
TSN_SEGMENTS = 8
THREADS = ('1', 'default')
NOISE = 3.0  # Per-frame grain, grey levels (sets the mp4 bitrate).
# A side that hangs (a stuck decoder) should fail the run, not stall it; a
# 64-frame side at --clips=96 on one busy core takes well under this.
SIDE_TIMEOUT_S = 1800
# What the sides run under, so that the harness prints it. Neither side is
# JAX, so XLA_FLAGS is removed rather than reported.
VIDJAX_ENV = {'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_ENABLE_ONEDNN_OPTS': '0',
              'XLA_FLAGS': None}
PYAV_ENV = {'XLA_FLAGS': None}


class _Parser(argparse.ArgumentParser):

  def error(self, message):
    # argparse's usage block and exit 2 would break `vidjax: error: ...`.
    raise VidjaxError(f'{message} (see python benchmarks/input_pipeline.py '
                      '--help)')


def parse(argv=None) -> argparse.Namespace:
  """The flags, checked; a bad one raises VidjaxError."""
  p = _Parser(description=__doc__.split('\n')[0])
  p.add_argument('--videos', type=int, default=8,
                 help='synthetic videos to generate')
  p.add_argument('--seconds', type=float, default=10.0,
                 help='length of each video')
  p.add_argument('--fps', type=int, default=25, help='frame rate')
  p.add_argument('--clips', type=int, default=48,
                 help='timed clips per side per round (whole batches)')
  p.add_argument('--batch', type=int, default=8, help='clips per batch')
  p.add_argument('--warmup', type=int, default=1,
                 help='untimed batches per side per round (the first builds '
                 "tf.data's graph)")
  p.add_argument('--rounds', type=int, default=2,
                 help='fresh processes per side, alternating the sides')
  p.add_argument('--threads', default=','.join(THREADS),
                 help='comma-separated thread settings, of: '
                 + ', '.join(THREADS))
  p.add_argument('--json', default=None,
                 help='also write every result (all steps, all rounds) here')
  p.add_argument('--keep', default=None,
                 help='generate the data into this directory and keep it')
  # The side's own process: set by the runner, not by hand.
  p.add_argument('--side', choices=('vidjax', 'pyav'), help=argparse.SUPPRESS)
  p.add_argument('--data', help=argparse.SUPPRESS)
  p.add_argument('--frames', type=int, help=argparse.SUPPRESS)
  p.add_argument('--stride', type=int, help=argparse.SUPPRESS)
  p.add_argument('--segments', action='store_true', help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  for name, low in (('videos', 1), ('clips', 1), ('batch', 1),
                    ('warmup', 1), ('rounds', 1), ('fps', 1)):
    if getattr(args, name) < low:
      raise VidjaxError(f'--{name} must be >= {low}, not '
                        f'{getattr(args, name)}')
  if args.clips < args.batch:
    raise VidjaxError(f'--clips ({args.clips}) must be at least one batch '
                      f'(--batch={args.batch})')
  if args.seconds * args.fps < 1:
    raise VidjaxError(f'--seconds={args.seconds} at --fps={args.fps} makes '
                      'videos of no frames')
  args.threads = _choose(args.threads)
  if args.side and (not args.data or len(args.threads) != 1 or
                    (args.frames is None) != (args.stride is None) or
                    (args.frames is None and not args.segments)):
    raise VidjaxError('--side wants --data, one --threads and --frames with '
                      '--stride (or --segments); the runner sets them')
  return args


def _choose(text: str) -> list[str]:
  names = [n for n in text.split(',') if n]
  unknown = sorted(set(names) - set(THREADS))
  if unknown or not names:
    raise VidjaxError(f'unknown --threads {", ".join(unknown) or "(none)"}; '
                      f'known: {", ".join(THREADS)}')
  return names


def steps_per_round(args) -> int:
  return args.clips // args.batch


# -----------------------------------------------------------------------------
# Synthetic Kinetics-like videos.
# -----------------------------------------------------------------------------


def synthetic_video(seed: int, num_frames: int) -> np.ndarray:
  """uint8 [T, 256, 340, 3]: a panning smooth texture with moving discs."""
  rng = np.random.default_rng(seed)
  big_h, big_w = HEIGHT + 64, WIDTH + 2 * num_frames
  noise = rng.random((big_h // 8 + 1, big_w // 8 + 1, 3))
  texture = np.kron(noise, np.ones((8, 8, 1)))[:big_h, :big_w]
  # Cheap blur: averages of shifted copies soften the 8-px blocks.
  texture = sum(np.roll(texture, (dy, dx), (0, 1))
                for dy in (-3, 0, 3) for dx in (-3, 0, 3)) / 9
  texture = (40 + 150 * texture + rng.normal(0, 6, texture.shape))
  yy, xx = np.mgrid[:HEIGHT, :WIDTH]
  discs = [(rng.uniform(30, 220), rng.uniform(30, 300), rng.uniform(-3, 3),
            rng.uniform(-2, 2), rng.uniform(15, 40), rng.uniform(0, 255, 3))
           for _ in range(3)]
  # Sensor-like noise that changes every frame: without it H.264 codes the
  # pan almost for free and the mp4s are far smaller than Kinetics' (~1 MB
  # per 10 s at 340x256).
  grain = rng.normal(0, NOISE, (17, HEIGHT, WIDTH, 3)).astype(np.float32)
  frames = np.empty((num_frames, HEIGHT, WIDTH, 3), np.uint8)
  for t in range(num_frames):
    dy = int(16 + 16 * np.sin(t / 20))
    img = texture[dy:dy + HEIGHT, 2 * t:2 * t + WIDTH] + grain[t % 17]
    for y, x, vy, vx, r, colour in discs:
      inside = (yy - (y + vy * t) % HEIGHT) ** 2 + (
          xx - (x + vx * t) % WIDTH) ** 2 < r * r
      img[inside] = colour
    frames[t] = np.clip(img, 0, 255)
  return frames


def write_data(directory: str, num_videos: int, num_frames: int, fps: int):
  """mp4 files and two TFRecord shards of the same videos."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from vidjax.data import formats  # pylint: disable=g-import-not-at-top
  try:
    from vidjax.data.video_io import encode_video  # pylint: disable=g-import-not-at-top
  except ImportError:
    encode_video = None
  mp4s, writers = [], [
      tf.io.TFRecordWriter(os.path.join(directory, f'clips-{i:05d}-of-00002'))
      for i in range(2)]
  for v in range(num_videos):
    frames = synthetic_video(v, num_frames)
    path = os.path.join(directory, f'video{v}.mp4')
    if encode_video is not None:
      encode_video(path, frames, fps, 'libx264', crf=23)
    else:
      _encode_mp4(path, frames, fps)
    mp4s.append(path)
    seq = formats.make_sequence_example(
        encoded_frames=[formats.encode_jpeg(f, 90) for f in frames],
        label=v % 4, label_text=f'class{v % 4}', filename=path)
    writers[v % 2].write(seq.SerializeToString())
  for w in writers:
    w.close()
  return mp4s


def _encode_mp4(path, frames, fps):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path, mode='w') as container:
    stream = container.add_stream('libx264', rate=fps, options={'crf': '23'})
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, 'yuv420p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, 'rgb24')))
    container.mux(stream.encode(None))


def mp4_paths(directory: str) -> list[str]:
  # Numeric order, as write_data made them: the sampler's indices then pick
  # the same videos in every process.
  paths = glob.glob(os.path.join(directory, 'video*.mp4'))
  return sorted(paths, key=lambda p: int(os.path.basename(p)[5:-4]))


# -----------------------------------------------------------------------------
# The two loaders.
# -----------------------------------------------------------------------------


def vidjax_batches(directory, num_frames, stride, batch, one_thread,
                   segments=False):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from configs import kinetics400_s3dg  # pylint: disable=g-import-not-at-top
  from vidjax.data import pipeline  # pylint: disable=g-import-not-at-top
  data = kinetics400_s3dg.get_config().data
  data.name = 'tfrecord'
  data.train_pattern = os.path.join(directory, 'clips-*')
  data.num_classes = 4
  data.num_frames, data.frame_stride = num_frames, stride
  data.shuffle_buffer = 16
  if segments:  # TSN/TSM: multi-scale crops, ImageNet normalisation.
    swap = {'sample_dense': 'sample_segments', 'crop_random':
            'crop_multi_scale'}
    data.train_steps = tuple(swap.get(x, x) for x in data.train_steps)
    data.normalization = 'imagenet'
  ds = pipeline.build_dataset(data, 'train', train=True, batch_size=batch)
  if one_thread:
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    ds = ds.with_options(options)
  return ds.as_numpy_iterator()


def torch_batches(mp4s, num_frames, stride, batch, one_thread):
  """What a PyTorch video Dataset over mp4 files does, PyAV inside."""
  import av  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top

  mean = torch.tensor(MEAN).view(1, 1, 1, 3)
  std = torch.tensor(STD).view(1, 1, 1, 3)

  class Mp4Clips(torch.utils.data.Dataset):

    def __init__(self, paths):
      self.paths = paths
      self.rng = np.random.default_rng(0)

    def __len__(self):
      return 1 << 30  # Sampled with replacement, like an endless epoch.

    def __getitem__(self, index):
      path = self.paths[index % len(self.paths)]
      with av.open(path) as container:
        stream = container.streams.video[0]
        if one_thread:
          stream.thread_count = 1
        else:
          stream.thread_type = 'AUTO'
        total = stream.frames
        span = (num_frames - 1) * stride + 1
        start = int(self.rng.integers(0, max(total - span, 0) + 1))
        wanted = [min(start + i * stride, total - 1)
                  for i in range(num_frames)]
        # Seek by timestamp to the key frame at or before `start`.
        tb = stream.time_base
        rate = stream.average_rate
        container.seek(int(start / rate / tb), stream=stream, backward=True,
                       any_frame=False)
        frames, need = {}, set(wanted)
        for frame in container.decode(stream):
          i = int(round(frame.pts * tb * rate))
          if i in need:
            frames[i] = frame.to_ndarray(format='rgb24')
          if i >= wanted[-1]:
            break
      clip = torch.from_numpy(np.stack([frames[i] for i in wanted]))
      y = int(self.rng.integers(0, HEIGHT - CROP + 1))
      x = int(self.rng.integers(0, WIDTH - CROP + 1))
      clip = clip[:, y:y + CROP, x:x + CROP]
      if self.rng.random() < 0.5:
        clip = clip.flip(2)
      clip = (clip.float() / 255 - mean) / std
      return clip, index % 4

  if one_thread:
    torch.set_num_threads(1)
  loader = torch.utils.data.DataLoader(
      Mp4Clips(mp4s), batch_size=batch, num_workers=0,
      sampler=torch.utils.data.RandomSampler(
          range(1 << 20), generator=torch.Generator().manual_seed(0)))
  return iter(loader)


# -----------------------------------------------------------------------------
# A side: one loader alone in this process.
# -----------------------------------------------------------------------------


def run_side(args):
  """Builds the side's loader and times it through harness.run_side."""
  one_thread = args.threads == ['1']
  if args.side == 'vidjax':
    if not glob.glob(os.path.join(args.data, 'clips-*')):
      raise VidjaxError(f'no TFRecords clips-* in --data={args.data}')
    batches = vidjax_batches(args.data, args.frames or TSN_SEGMENTS,
                             args.stride or 1, args.batch, one_thread,
                             segments=args.segments)
    # TF sizes its shared inter-op pool, which tf.data uses without a
    # private pool, to the CPUs this process may run on.
    threads = 1 if one_thread else len(os.sched_getaffinity(0))
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    info = {'tensorflow': tf.__version__,
            'tf.data pool': ('private, 1 thread' if one_thread
                             else 'shared inter-op pool')}
  else:
    mp4s = mp4_paths(args.data)
    if not mp4s:
      raise VidjaxError(f'no video*.mp4 in --data={args.data}')
    batches = torch_batches(mp4s, args.frames, args.stride, args.batch,
                            one_thread)
    import av  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    threads = torch.get_num_threads()
    info = {'torch': torch.__version__, 'av': av.__version__,
            'ffmpeg threads': '1' if one_thread else 'AUTO'}
  # run_side times wall clock only. The CPU time of each step goes into
  # `info`, which run_side copies into its result line after the steps, so
  # these lists are full by then (they are shared, not copied, either way).
  info.update(clips_per_step=args.batch, cpu_warmup_s=[], cpu_step_s=[])

  def step():
    start = time.process_time()
    next(batches)
    cpu = time.process_time() - start
    warm = len(info['cpu_warmup_s']) < args.warmup
    info['cpu_warmup_s' if warm else 'cpu_step_s'].append(cpu)

  harness.run_side(step, warmup=args.warmup, iters=steps_per_round(args),
                   setup_s=time.perf_counter() - _START, threads=threads,
                   info=info)


def side_argv(args, side: str, threads: str, frames: int | None = None,
              stride: int | None = None, segments: bool = False) -> list[str]:
  argv = [sys.executable, os.path.abspath(__file__), f'--side={side}',
          f'--data={args.data}', f'--threads={threads}',
          f'--batch={args.batch}', f'--clips={args.clips}',
          f'--warmup={args.warmup}']
  if segments:
    return argv + ['--segments']
  return argv + [f'--frames={frames}', f'--stride={stride}']


def sides(args, frames: int, stride: int, threads: str) -> list[harness.Side]:
  """vidjax and pyav on one clip and thread setting."""
  return [harness.Side('vidjax', side_argv(args, 'vidjax', threads, frames,
                                           stride), VIDJAX_ENV,
                       SIDE_TIMEOUT_S),
          harness.Side('pyav', side_argv(args, 'pyav', threads, frames,
                                         stride), PYAV_ENV, SIDE_TIMEOUT_S)]


def tsn_sides(args, threads: str) -> list[harness.Side]:
  """vidjax alone on TSN segments: PyAV has no such loader here."""
  return [harness.Side('vidjax', side_argv(args, 'vidjax', threads,
                                           segments=True), VIDJAX_ENV,
                       SIDE_TIMEOUT_S)]


# -----------------------------------------------------------------------------
# The parent: data, rounds, tables.
# -----------------------------------------------------------------------------


def rates(side: dict) -> dict:
  """Clips per CPU-second and per wall-second of a harness side result.

  Per CPU-second: each round's timed clips over its timed CPU seconds, then
  the median over rounds (sums, not per-step ratios, since tf.data's
  prefetching moves work between neighbouring steps).
  """
  per_round = []
  for run in side['runs']:
    info = run['info']
    clips = info['clips_per_step'] * len(info['cpu_step_s'])
    per_round.append(clips / sum(info['cpu_step_s']))
  clips_per_step = side['runs'][0]['info']['clips_per_step']
  return {'cpu': harness.median(per_round), 'cpu_per_round': per_round,
          'wall': clips_per_step / side['median_s'],
          'wall_per_round': [clips_per_step / m
                             for m in side['round_medians_s']]}


def _range(values) -> str:
  return f'{min(values):.2f}-{max(values):.2f}'


def s3dg_gmacs(frames):
  """Forward multiply-accumulates (fvcore's convention), 400 classes."""
  # vidjax.tools.profile's counting, without importing its absl flags.
  from vidjax.models import complexity  # pylint: disable=g-import-not-at-top
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top
  model = create_model('s3dg', num_classes=400)
  shape = (1, frames, CROP, CROP, 3)
  variables = complexity.abstract_variables(model, shape)
  return complexity.forward_macs(model, variables, shape) / 1e9


def main(argv=None):
  args = parse(argv)
  if args.side:
    return run_side(args)
  args.data = os.path.abspath(args.keep or tempfile.mkdtemp(
      prefix='vidjax_bench_'))
  os.makedirs(args.data, exist_ok=True)
  try:
    return _compare(args)
  finally:
    if not args.keep:
      shutil.rmtree(args.data, ignore_errors=True)


def _compare(args):
  num_frames = int(round(args.seconds * args.fps))
  t0 = time.perf_counter()
  mp4s = write_data(args.data, args.videos, num_frames, args.fps)
  mp4_mb = sum(os.path.getsize(p) for p in mp4s) / len(mp4s) / 1e6
  rec_mb = sum(os.path.getsize(p) for p in glob.glob(
      os.path.join(args.data, 'clips-*'))) / len(mp4s) / 1e6
  steps = steps_per_round(args)
  print(f'{len(mp4s)} videos of {num_frames} frames {WIDTH}x{HEIGHT} '
        f'generated in {time.perf_counter() - t0:.0f} s; per video: mp4 '
        f'{mp4_mb:.2f} MB, TFRecord (JPEG q90) {rec_mb:.2f} MB. Per side '
        f'and round a fresh process: {args.warmup} warm-up batch(es), then '
        f'{steps} timed batches of {args.batch} clips', flush=True)

  comparisons, rows = [], []
  for frames, stride in SETTINGS:
    clip = f'{frames}x{CROP}², stride {stride}'
    r = {}
    for threads in args.threads:
      key = f'{threads} thread' if threads == '1' else 'default threads'
      result = harness.measure(sides(args, frames, stride, threads),
                               rounds=args.rounds, label=f'{clip}, {key}')
      for name in ('vidjax', 'pyav'):
        r[name, threads] = rates(result['sides'][name])
        print(f'  {name}: {r[name, threads]["cpu"]:.2f} clips/CPU-s (per '
              f'round {_range(r[name, threads]["cpu_per_round"])}), '
              f'{r[name, threads]["wall"]:.2f} clips/s wall', flush=True)
      comparisons.append({'clip': clip, 'threads': threads,
                          'clips_per_s': {n: r[n, threads]
                                          for n in ('vidjax', 'pyav')},
                          **result})
    rows.append((frames, clip, r))
  # TSN/TSM clips (8 segments over the whole video), vidjax only: the cores
  # estimate for TSM-R50 below.
  tsn = {}
  for threads in args.threads:
    key = f'{threads} thread' if threads == '1' else 'default threads'
    result = harness.measure(tsn_sides(args, threads), rounds=args.rounds,
                             label=f'{TSN_SEGMENTS}x{CROP}² TSN segments, '
                             f'{key}')
    tsn[threads] = rates(result['sides']['vidjax'])
    print(f'  vidjax: {tsn[threads]["cpu"]:.2f} clips/CPU-s (per round '
          f'{_range(tsn[threads]["cpu_per_round"])}), '
          f'{tsn[threads]["wall"]:.2f} clips/s wall', flush=True)
    comparisons.append({'clip': f'{TSN_SEGMENTS}x{CROP}² TSN segments',
                        'threads': threads,
                        'clips_per_s': {'vidjax': tsn[threads]}, **result})

  def cell(rate):
    return f'{rate["cpu"]:.2f} ({rate["wall"]:.2f})' if rate else '—'

  print('\nClips per CPU-second of the side\'s process (all threads), median '
        'over rounds; wall-clock clips/s in brackets. "best" takes each side '
        'at its better thread setting, per CPU-second.')
  header = [f'{n}, {"1 thread" if t == "1" else "default threads"}'
            for n in ('vidjax', 'PyAV mp4') for t in args.threads]
  print('| clip | ' + ' | '.join(header) + ' | vidjax / PyAV, best vs best |')
  print('|---' * (len(header) + 2) + '|')
  per_core = {}
  for frames, clip, r in rows:
    best_jx = max(r['vidjax', t]['cpu'] for t in args.threads)
    best_pt = max(r['pyav', t]['cpu'] for t in args.threads)
    per_core[frames] = best_jx
    cells = [cell(r[n, t]) for n in ('vidjax', 'pyav') for t in args.threads]
    print(f'| {clip} | ' + ' | '.join(cells) +
          f' | {best_jx / best_pt:.2f}x |')
  cells = ([cell(tsn[t]) for t in args.threads] +
           ['' for _ in args.threads])
  print(f'| {TSN_SEGMENTS}x{CROP}² TSN segments (vidjax only) | '
        + ' | '.join(cells) + ' | |')
  tsn_best = max(tsn[t]['cpu'] for t in args.threads)

  print('\nHost cores to feed a TPU v5e-8: training = 3x forward FLOPs, '
        '1 MAC = 2 FLOPs, bf16 peak 197 TFLOP/s per chip, 40% MFU.')
  print('| model | G MACs/clip (fwd) | train TFLOP/clip | clips/s per '
        'chip | clips/s per host (8 chips) | vidjax clips/s per core | '
        'cores |')
  print('|---|---|---|---|---|---|---|')
  models = [(f'S3D-G {f}x{CROP}²', s3dg_gmacs(f), per_core[f])
            for f, _ in SETTINGS]
  # TSM-R50: REFERENCES.md's published fvcore count.
  models.append((f'TSM-R50 {TSN_SEGMENTS}x{CROP}² (32.70 G MACs, '
                 'published)', 32.70, tsn_best))
  cores = []
  for name, gmacs, rate in models:
    train_tflop = 3 * 2 * gmacs / 1e3
    per_chip = 197 * 0.40 / train_tflop
    per_host = 8 * per_chip
    cores.append({'model': name, 'gmacs': gmacs, 'per_core': rate,
                  'cores': per_host / rate})
    print(f'| {name} | {gmacs:.2f} | {train_tflop:.3f} | {per_chip:.0f} | '
          f'{per_host:.0f} | {rate:.2f} | {per_host / rate:.0f} |')
  if args.json:
    harness.write_json(args.json, {
        'args': {k: v for k, v in vars(args).items()
                 if k not in ('side', 'data', 'frames', 'stride', 'segments')},
        'data': {'videos': len(mp4s), 'frames': num_frames,
                 'mp4_mb_per_video': mp4_mb,
                 'tfrecord_mb_per_video': rec_mb},
        'comparisons': comparisons, 'host_cores_v5e_8': cores})
    print(f'results: {args.json}')


if __name__ == '__main__':
  harness.cli_main(main)
