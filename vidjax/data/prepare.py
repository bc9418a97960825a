"""Converts raw videos into DMVR TFRecords: Kinetics-400/600/700, SSv2.

  python -m vidjax.data.prepare kinetics400 --manual_dir=/data/k400 \\
      --data_dir=/data/tfds [--workers=8] [--fps=25] [--short_side=256]

DATASET is one of kinetics400, kinetics600, kinetics700, ssv2. manual_dir
holds the annotation files and the videos (layouts: docs/datasets.md). The
records go to `<data_dir>/<dataset>/<config>/<version>/` with a
`manifest.csv` of every video's fate. Conversion runs `--workers` processes
and can be interrupted: run the same command again and it resumes, skipping
the shards already written. Non-default --fps/--short_side/--jpeg_quality
give a config named after them (e.g. `kinetics400/fps10_short128_q90`);
the summary prints the name to give `config.data.name`.

An existing dataset of the same settings is kept as it is; `--overwrite`
prepares it again (after fixing the annotations, say) and swaps the new one
in only once it is complete: a failed, killed or out-of-space run leaves the
old one in place and never a half dataset that looks prepared.

User errors (missing or malformed annotation files, unknown labels, a video
in two splits, an empty manual_dir) and file errors (a full disk) print one
line `vidjax: error: ...` and exit 1; `--verbose` shows the traceback.
"""

import os
import sys
import time

from absl import flags
from absl import logging

from vidjax import cli
from vidjax.errors import VidjaxError

DATASETS = ('kinetics400', 'kinetics600', 'kinetics700', 'ssv2')

_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Directory with the annotation files and videos.')
_DATA_DIR = flags.DEFINE_string(
    'data_dir', None, 'TFDS data directory for the records (default: TFDS\'s, '
    '$TFDS_DATA_DIR or ~/tensorflow_datasets).')
_DOWNLOAD_DIR = flags.DEFINE_string(
    'download_dir', None, 'Where unfinished shards wait for a resume '
    '(default <data_dir>/downloads).')
_WORKERS = flags.DEFINE_integer(
    'workers', None, 'Conversion processes (default: all cores).')
_FPS = flags.DEFINE_string(
    'fps', None, 'Frames per second to store, or "native" to keep every '
    'source frame (default: the dataset\'s, 25 for Kinetics, native for '
    'SSv2).')
_SHORT_SIDE = flags.DEFINE_integer(
    'short_side', None, 'Resize the shorter side to this; 0 keeps the source '
    'size (default 256).')
_JPEG_QUALITY = flags.DEFINE_integer(
    'jpeg_quality', None, 'JPEG quality of the frames (default 90).')
_VIDEOS_PER_SHARD = flags.DEFINE_integer(
    'videos_per_shard', None, 'Videos per TFRecord shard (default 100).')
_OVERWRITE = flags.DEFINE_bool(
    'overwrite', False, 'Prepare again over an existing dataset of the same '
    'settings (e.g. after fixing the annotations); the old one stays in '
    'place until the new one is complete.')


def _parse_fps(text):
  if text is None:
    return None, False
  if text.strip().lower() in ('native', 'none', '0'):
    return None, True
  try:
    value = float(text)
  except ValueError:
    raise VidjaxError(f'--fps must be a number or "native", got {text!r}')
  if value <= 0:
    raise VidjaxError(f'--fps must be positive, got {text!r}')
  return value, True


def make_builder(dataset, *, manual_dir=None, data_dir=None, workers=None,
                 fps=None, short_side=None, jpeg_quality=None,
                 videos_per_shard=None, progress=True, interrupt_after=None):
  """The builder for DATASET with the given settings (not yet prepared).

  `fps` is a number, 'native', or None (the dataset's default); likewise
  `short_side` (0 keeps the source size) and `jpeg_quality`.
  """
  # pylint: disable=g-import-not-at-top
  from vidjax.data import builders
  from vidjax.data.builders import raw_video

  if dataset not in DATASETS:
    raise VidjaxError(f'unknown dataset {dataset!r}; choose one of '
                      f'{", ".join(DATASETS)}')
  cls = builders.BUILDERS[dataset]
  default = cls.builder_configs[cls.DEFAULT_BUILDER_CONFIG_NAME]
  fps_value, fps_given = _parse_fps(None if fps is None else str(fps))
  cfg_fps = fps_value if fps_given else default.fps
  if short_side is not None and short_side < 0:
    raise VidjaxError(f'--short_side must be >= 0, got {short_side}')
  cfg_short = default.short_side if short_side is None else (short_side or None)
  cfg_quality = default.jpeg_quality if jpeg_quality is None else jpeg_quality
  if not 1 <= cfg_quality <= 100:
    raise VidjaxError(f'--jpeg_quality must be in 1..100, got {cfg_quality}')
  if videos_per_shard is not None and videos_per_shard < 1:
    raise VidjaxError(f'--videos_per_shard must be >= 1, got {videos_per_shard}')
  if workers is not None and workers < 1:
    raise VidjaxError(f'--workers must be >= 1, got {workers}')
  _check_directory('--data_dir', data_dir)
  settings = (cfg_fps, cfg_short, cfg_quality)
  if settings == (default.fps, default.short_side, default.jpeg_quality):
    config = default.name
  else:
    config = raw_video.config_name(*settings)
  return cls(config=config, data_dir=data_dir, workers=workers,
             videos_per_shard=videos_per_shard, progress=progress,
             interrupt_after=interrupt_after)


def _check_directory(flag, path):
  # Else a traceback from deep in TFDS (NotADirectoryError on makedirs).
  if path and os.path.exists(path) and not os.path.isdir(path):
    raise VidjaxError(f'{flag} {path} is a file, not a directory')


def prepare(builder, *, manual_dir, download_dir=None, overwrite=False):
  """Runs the conversion; returns the manifest rows.

  overwrite: prepare again even if the dataset exists; it is replaced only
  once the new one is complete (`builders.replacement`).
  """
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  _check_directory('--download_dir', download_dir)
  mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
          else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
  config = tfds.download.DownloadConfig(
      manual_dir=manual_dir, try_download_gcs=False, download_mode=mode)
  builder.download_and_prepare(download_dir=download_dir,
                               download_config=config)
  return builder.read_manifest()


def summary_lines(builder, rows, seconds=None, converted=None):
  """The run summary: per split, counts by status and shards."""
  from vidjax.data.builders import raw_video  # pylint: disable=g-import-not-at-top

  lines = [f'{builder.name}/{builder.builder_config.name} '
           f'{builder.version}: {builder.data_path}']
  counts = raw_video.summarize(rows)
  prepared = set(builder.split_names)
  for split, c in counts.items():
    total = sum(c.values())
    parts = ', '.join(f'{c[s]} {s}' for s in raw_video.STATUSES)
    if split in prepared:
      shards = len(builder.split_files(split))
      lines.append(f'  {split}: {total} videos: {parts}; {shards} shard(s)')
    else:
      lines.append(f'  {split}: {total} videos: {parts}; not written (no '
                   'video of this split decoded)')
  if seconds is not None and converted:
    lines.append(f'  converted {converted} videos in {seconds:.1f} s '
                 f'({converted / seconds:.2f} videos/s)')
  lines.extend(f'  note: {n}' for n in builder.notes)
  lines.append(f'  manifest: {builder.manifest_path}')
  name = builder.name
  if builder.builder_config.name != 'default':
    name += f'/{builder.builder_config.name}'
  data_dir = os.fspath(builder.data_dir_root)
  lines.append(f"  use it: config.data.name = '{name}', "
               f"config.data.data_dir = '{data_dir}'")
  return lines


def main(argv):
  try:
    if len(argv) != 2:
      raise VidjaxError(f'give one DATASET ({", ".join(DATASETS)}); got '
                        f'{" ".join(argv[1:]) or "none"}')
    dataset = argv[1]
    if not _MANUAL_DIR.value:
      raise VidjaxError('--manual_dir is required: the directory with the '
                        'annotation files and videos')
    builder = make_builder(
        dataset, data_dir=_DATA_DIR.value, workers=_WORKERS.value,
        fps=_FPS.value, short_side=_SHORT_SIDE.value,
        jpeg_quality=_JPEG_QUALITY.value,
        videos_per_shard=_VIDEOS_PER_SHARD.value,
    )
    already = builder.is_prepared() and not _OVERWRITE.value
    start = time.monotonic()
    rows = prepare(builder, manual_dir=_MANUAL_DIR.value,
                   download_dir=_DOWNLOAD_DIR.value,
                   overwrite=_OVERWRITE.value)
    seconds = time.monotonic() - start
  except KeyboardInterrupt:
    print('\nvidjax: interrupted; finished shards are kept: run the same '
          'command again to resume', file=sys.stderr)
    sys.exit(130)
  if already:
    print('Already prepared (--overwrite prepares it again; the old one '
          'stays until the new one is complete).')
  converted = None if already else builder.converted_this_run
  print('\n'.join(summary_lines(builder, rows, seconds, converted)))


def run():
  # TFDS's info/warning lines (variant folders, custom configs) would bury
  # the progress line and the one-line errors; our notes go to the summary.
  cli.run(main, log_level=logging.ERROR)


if __name__ == '__main__':
  run()
