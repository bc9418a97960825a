"""Everything a run will read, checked before anything is compiled.

A training run checks, in this order, each failure one `VidjaxError` line
(`vidjax: error: ...`, exit 1) naming the key, the shard or the label:

1. At load (`vidjax.config.validate`, from `vidjax.main` before the workdir
   is made or the dataset opened): every key's type, range and choice, and
   the keys that only make sense together (`eval_every_steps` needs
   `val_split`, `mean` needs `std` and `std` `mean`, `flip_label_map` needs
   `horizontal_flip`, `input_shards` divides `batch_size`, ...). A bad value
   in a config argument string (`--config=configs/x.py:segments=12`) fails
   while the file loads, naming the argument and what it takes
   (configs/arguments.py).
2. When the dataset is opened (`pipeline.dataset_info`, trainer's Data
   section): the dataset and its splits exist; existing TFRecords' patterns
   match files, `class_names_file` is readable, names every class once, and
   agrees with `num_classes`; every local TFRecords shard is walked (its
   record count).
3. Here, `check(config, meta)`, still before the mesh and the model:
   * the pipeline: step lists (`train_steps`, `eval_steps`) name registered
     steps, the normalisation preset exists, `flip_label_map` labels are
     classes, evaluation views that need 'spatial_crops' list it;
   * the run's shape: `input_shards` is a multiple of the processes, and the
     training split has a record for every input stream;
   * `init_from` is weights of `config.model_name` (a conversion, a trained
     workdir or a checkpoint step);
   * every shard of every split the run reads (training, validation during
     training, the final test): it exists, is a regular file, can be opened
     and read, is not empty (unless its metadata lists no records), and its
     first record's header (length and the length's CRC) checks out, or,
     when it does not, a sound record follows somewhere (damage at the
     start, skipped at read time), else it is no TFRecord file;
   * labels: the first four records of every shard have labels in
     [0, num_classes) (the dataset's class list, or config.data.num_classes
     / class_names_file). Two or more labels outside, over 1 % of the
     records sampled, are an error (a num_classes smaller than the labels,
     an unlabelled split: -1); a single one is a stray record, a warning
     line, then skipped and counted as 'bad_label' when read. Either line
     names the count, an example record, its shard, its label and
     num_classes.
   Per shard this reads the 12-byte headers and the contexts (label, text,
   file name: a few hundred bytes) of its first four records, never the
   clips: thousands of 100 MB Kinetics shards cost a few requests each,
   16 shards at a time.
4. Right after, still before compiling (trainer, vidjax/parallel/mesh.py):
   the mesh fits the devices, the batch sizes divide over its data axis and
   the processes, `num_frames` over its time axis, `bn_sync_devices` over
   the data axis.
5. At read time (`tfrecord_reader`, `pipeline`): damage inside a shard is
   skipped and counted, never an error: a bad checksum, a garbage length, a
   truncated shard, garbage appended after the last record, a record that
   is not a SequenceExample, lacks frames or label, cannot be decoded, or
   has a label outside the classes ('bad_label'). A shard that vanishes
   mid-run counts its remaining records as skipped. While training, when
   more than 1 % of the records read in a log interval are skipped for one
   reason, one loud warning line says so, once per reason
   (`input_shards.SkipWatch`; for 'bad_label' it asks whether num_classes
   is right).

What is an error and what is counted: a fault of the whole shard (missing,
a directory, unreadable, empty, no record in it) or of the configuration
(labels past num_classes in more than a stray record sampled) stops the run
before compiling; damage to single records does not, because one bad record
among millions should cost that record, not the run, and every skip is
counted and logged.
"""

from __future__ import annotations

from concurrent import futures
import os
import sys

import jax

from vidjax.data import input_shards
from vidjax.data import pipeline_steps
from vidjax.data import shard_check
from vidjax.data import sources
from vidjax.data import transforms
from vidjax.errors import VidjaxError

# Shards looked at concurrently: remote files cost a request each.
_THREADS = 16
# Records per shard whose labels are compared with the classes.
_LABELS_PER_SHARD = 4
# More bad labels than this share of the sample (and more than one) is a
# configuration's fault, not a stray record's.
_STRAY_SHARE = 0.01


def splits_read(config, meta) -> list[str]:
  """The splits a run of `config` reads, each once, in the order it does."""
  names = []
  if config.total_steps > 0:
    names.append(config.data.train_split)
  if config.eval_every_steps and config.data.val_split in meta.num_examples:
    names.append(config.data.val_split)
  names.append(config.data.eval_split)
  return list(dict.fromkeys(names))


def check(config, meta, process_count: int | None = None) -> None:
  """Raises VidjaxError (one line) for the first problem of the run's input.

  See the module docstring for what is checked; `meta` is
  `pipeline.dataset_info(config.data)`.
  """
  if process_count is None:
    process_count = jax.process_count()
  check_pipeline(config.data, meta.num_classes,
                 config.val_views if config.eval_every_steps else (1, 1))
  input_shards.check(config, process_count,
                     meta.num_examples.get(config.data.train_split, 0))
  check_init_from(config)
  source = sources.open_source(config.data)
  for split in splits_read(config, meta):
    check_split(source, split, meta.num_classes, config.data)


def check_pipeline(data_config, num_classes: int, val_views=(1, 1)) -> None:
  """Steps, normalisation, flip map and views of `config.data`."""
  pipeline_steps.resolve(data_config, True)
  pipeline_steps.resolve(data_config, False)
  pipeline_steps.normalization(data_config)
  if data_config.horizontal_flip and data_config.flip_label_map:
    try:
      transforms.label_swap_table(data_config.flip_label_map, num_classes)
    except (ValueError, TypeError) as e:
      what = str(e)
      if not what.startswith('flip_label_map'):  # int('left'): not a label.
        what = f'flip_label_map={dict(data_config.flip_label_map)!r}: {what}'
      raise VidjaxError(f'config.data.{what} ({num_classes} classes)'
                        ) from None
  crops = max(data_config.num_test_crops, val_views[1])
  if crops > 1 and 'spatial_crops' not in data_config.eval_steps:
    raise VidjaxError(
        f'{crops} spatial crops per view (config.data.num_test_crops / '
        'config.val_views) need the step \'spatial_crops\' in '
        'config.data.eval_steps, which does not list it')


def check_init_from(config) -> None:
  """`init_from` is weights of `config.model_name` the loader can read: a
  `vidjax.convert` output, a trained workdir or a checkpoint step."""
  directory = config.init_from
  if not directory:
    return
  from vidjax.inference import loader  # pylint: disable=g-import-not-at-top
  try:
    model = loader.model_name_of(loader.resolve(directory))
  except VidjaxError as e:
    raise VidjaxError(f'config.init_from={directory!r}: {e}') from None
  if model is not None and model != config.model_name:
    raise VidjaxError(f'config.init_from={directory!r} holds {model!r} '
                      f'weights but config.model_name is '
                      f'{config.model_name!r}')


def _look(path: str, expected: int | None) -> list[int | None]:
  shard_check.check_file(path, expected)
  return [] if expected == 0 else shard_check.first_labels(
      path, _LABELS_PER_SHARD)


def check_split(source, split: str, num_classes: int, data_config) -> None:
  """Every shard of `split` (`shard_check`), and its first records' labels.

  Labels outside [0, num_classes) among the records sampled: one is a
  stray (a warning line; the record is skipped and counted when read), two
  or more, over 1 % of the sample, are the configuration's (an error).
  """
  files = source.shard_files(split)
  with futures.ThreadPoolExecutor(min(_THREADS, len(files) or 1)) as pool:
    labels = list(pool.map(lambda pf: _look(*pf), files))
  sampled = sum(len(found) for found in labels)
  bad = [(path, i, label) for (path, _), found in zip(files, labels)
         for i, label in enumerate(found)
         if label is not None and not 0 <= label < num_classes]
  if not bad:
    return
  path, i, label = next((b for b in bad if b[2] < 0), bad[0])
  example = f'record {i} of {path} has label {label}'
  head = (f'{len(bad)} of the {sampled} records sampled from split {split!r}'
          f' (the first {_LABELS_PER_SHARD} of each shard)')
  if label < 0:
    what = (f'{head} have no label, e.g. {example}: an unlabelled split '
            'cannot be trained or evaluated on')
  else:
    where = (f'config.data.num_classes={num_classes}'
             if data_config.name == sources.TFRECORD else
             f'dataset {data_config.name!r}: {num_classes} classes')
    what = (f'{head} have labels outside [0, {num_classes}) ({where}), e.g. '
            f'{example}; such records are skipped as bad_label')
  if len(bad) >= 2 and len(bad) > _STRAY_SHARE * sampled:
    raise VidjaxError(what)
  print(f'vidjax: WARNING: {what}', file=sys.stderr, flush=True)
