"""Training-clip throughput per CPU core: vidjax's JPEG TFRecords vs PyAV mp4.

  bash run.sh python benchmarks/input_pipeline.py            # ~2 min
  bash run.sh python benchmarks/input_pipeline.py --videos=16 --clips=64

Both sides make the same training clips from the same synthetic videos
(Kinetics-like: 340x256, i.e. short side 256, 25 fps, 10 s, a panning
textured background with moving shapes):

* vidjax: DMVR SequenceExample TFRecords, one JPEG (quality 90, as the
  builders write) per frame, through `vidjax.data.pipeline` with the
  Kinetics S3D-G config's training steps: random clip, random 224² crop
  decoded as a window (`decode_and_crop_jpeg`), flip, Inception
  normalisation, batches of 8.
* PyTorch-style: mp4 (H.264, x264 defaults but crf 23, so one key frame per
  10 s clip as in FFmpeg-trimmed Kinetics files), decoded with PyAV in the
  `__getitem__` of a `torch.utils.data.Dataset` as PySlowFast's PyAV path
  does: seek to the key frame before a random start, decode up to the last
  sampled frame, convert the sampled frames to RGB numpy, random 224² crop,
  flip, normalise as float32, and batches of 8 by a `DataLoader`
  (num_workers=0: the loop runs in this process, so its CPU time is
  measurable).

"Clips per second per core" is clips divided by the CPU time the process
spent (user + system, all threads), so a busy machine slows the wall clock
but barely the figure. Each side also runs with one thread (tf.data's private
pool of 1; PyAV/FFmpeg and torch at 1 thread) and reports wall-clock clips/s.

Clips: 16x224² with stride 4 (2.4 s; SlowFast/X3D-style) and 64x224² with
stride 1 (2.56 s; I3D/S3D-G). The JPEG side decodes only the sampled frames;
the mp4 side must decode every frame from the key frame to the last sampled
one: that asymmetry is the point of storing JPEGs.
"""
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

_VIDEOS = flags.DEFINE_integer('videos', 8, 'Synthetic videos to generate.')
_SECONDS = flags.DEFINE_float('seconds', 10.0, 'Length of each video.')
_FPS = flags.DEFINE_integer('fps', 25, 'Frame rate.')
_CLIPS = flags.DEFINE_integer('clips', 48, 'Timed clips per measurement.')
_BATCH = flags.DEFINE_integer('batch', 8, 'Clips per batch.')
_KEEP = flags.DEFINE_string('keep', None, 'Keep the generated data here.')

HEIGHT, WIDTH = 256, 340
CROP = 224
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
SETTINGS = ((16, 4), (64, 1))  # (frames, stride)
NOISE = 3.0  # Per-frame grain, grey levels (sets the mp4 bitrate).


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


def measure(batches, num_clips, batch):
  """(clips per CPU-second, clips per wall-second) after one warm-up batch."""
  next(batches)
  steps = max(1, num_clips // batch)
  cpu, wall = time.process_time(), time.perf_counter()
  for _ in range(steps):
    next(batches)
  cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
  return steps * batch / cpu, steps * batch / wall


# -----------------------------------------------------------------------------
# Model cost.
# -----------------------------------------------------------------------------


def s3dg_gmacs(frames):
  """Forward multiply-accumulates (fvcore's convention), 400 classes."""
  # vidjax.tools.profile's counting, without importing its absl flags.
  from vidjax.models import complexity  # pylint: disable=g-import-not-at-top
  from vidjax.models import create_model  # pylint: disable=g-import-not-at-top
  model = create_model('s3dg', num_classes=400)
  shape = (1, frames, CROP, CROP, 3)
  variables = complexity.abstract_variables(model, shape)
  return complexity.forward_macs(model, variables, shape) / 1e9


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
      __file__))))
  directory = _KEEP.value or tempfile.mkdtemp(prefix='vidjax_bench_')
  os.makedirs(directory, exist_ok=True)
  num_frames = int(round(_SECONDS.value * _FPS.value))
  try:
    t0 = time.perf_counter()
    mp4s = write_data(directory, _VIDEOS.value, num_frames, _FPS.value)
    mp4_mb = sum(os.path.getsize(p) for p in mp4s) / len(mp4s) / 1e6
    rec_mb = sum(os.path.getsize(os.path.join(directory, f))
                 for f in os.listdir(directory)
                 if f.startswith('clips-')) / len(mp4s) / 1e6
    print(f'{len(mp4s)} videos of {num_frames} frames {WIDTH}x{HEIGHT} '
          f'generated in {time.perf_counter() - t0:.0f} s; per video: mp4 '
          f'{mp4_mb:.2f} MB, TFRecord (JPEG q90) {rec_mb:.2f} MB', flush=True)
    rows = []
    for frames, stride in SETTINGS:
      clip = f'{frames}x{CROP}², stride {stride}'
      r = {}
      for one_thread in (True, False):
        key = '1 thread' if one_thread else 'default threads'
        r['vidjax', key] = measure(vidjax_batches(
            directory, frames, stride, _BATCH.value, one_thread),
                                   _CLIPS.value, _BATCH.value)
        r['pyav', key] = measure(torch_batches(
            mp4s, frames, stride, _BATCH.value, one_thread),
                                 _CLIPS.value, _BATCH.value)
        print(f'{clip}, {key}: vidjax {r["vidjax", key][0]:.2f} clips/CPU-s '
              f'({r["vidjax", key][1]:.2f}/s wall), PyAV '
              f'{r["pyav", key][0]:.2f} clips/CPU-s '
              f'({r["pyav", key][1]:.2f}/s wall)', flush=True)
      rows.append((frames, clip, r))
    # TSN/TSM clips (8 segments over the whole video), vidjax only: the
    # cores estimate for TSM-R50 below.
    tsn = measure(vidjax_batches(directory, 8, 1, _BATCH.value, True,
                                 segments=True), _CLIPS.value, _BATCH.value)

    print('\nClips per second per core (clips / CPU-second of the process, '
          'all threads); "best" takes each side at its better thread '
          'setting.')
    print('| clip | vidjax, 1 thread | vidjax, default threads | PyAV mp4, 1 '
          'thread | PyAV mp4, default threads | ratio, best vs best |')
    print('|---|---|---|---|---|---|')
    per_core = {}
    for frames, clip, r in rows:
      best_jx = max(r['vidjax', k][0] for k in ('1 thread', 'default threads'))
      best_pt = max(r['pyav', k][0] for k in ('1 thread', 'default threads'))
      per_core[frames] = best_jx
      print(f'| {clip} | {r["vidjax", "1 thread"][0]:.2f} | '
            f'{r["vidjax", "default threads"][0]:.2f} | '
            f'{r["pyav", "1 thread"][0]:.2f} | '
            f'{r["pyav", "default threads"][0]:.2f} | '
            f'{best_jx / best_pt:.2f}x |')
    print(f'| 8x{CROP}² TSN segments (vidjax only) | {tsn[0]:.2f} | | | | |')

    print('\nHost cores to feed a TPU v5e-8: training = 3x forward FLOPs, '
          '1 MAC = 2 FLOPs, bf16 peak 197 TFLOP/s per chip, 40% MFU.')
    print('| model | G MACs/clip (fwd) | train TFLOP/clip | clips/s per '
          'chip | clips/s per host (8 chips) | vidjax clips/s per core | '
          'cores |')
    print('|---|---|---|---|---|---|---|')
    models = [(f'S3D-G {f}x{CROP}²', s3dg_gmacs(f), per_core[f])
              for f, _ in SETTINGS]
    # vidjax has no ResNet yet: REFERENCES.md's fvcore count.
    models.append((f'TSM-R50 8x{CROP}² (32.70 G MACs, published)', 32.70,
                   tsn[0]))
    for name, gmacs, rate in models:
      train_tflop = 3 * 2 * gmacs / 1e3
      per_chip = 197 * 0.40 / train_tflop
      per_host = 8 * per_chip
      print(f'| {name} | {gmacs:.2f} | {train_tflop:.3f} | {per_chip:.0f} | '
            f'{per_host:.0f} | {rate:.2f} | {per_host / rate:.0f} |')
  finally:
    if not _KEEP.value:
      shutil.rmtree(directory, ignore_errors=True)


if __name__ == '__main__':
  app.run(main)
