"""Entry point: `python -m vidjax.main --config=configs/demo.py --workdir=DIR`.

`--config.key=value` overrides a config field; an unknown key is an error.
User errors print one line (`--verbose` shows the traceback) and exit 1.
"""
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from vidjax.errors import VidjaxError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py), optionally '
    'followed by :ARG for its get_config(ARG).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints, logs and results.')
_VERBOSE = flags.DEFINE_bool('verbose', False,
                             'Show tracebacks for user errors.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that flag errors answer before TF and JAX load.
  from vidjax.train import trainer  # pylint: disable=g-import-not-at-top

  try:
    results = trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except VidjaxError as e:
    if _VERBOSE.value:
      raise
    print(f'vidjax: error: {e}', file=sys.stderr)
    sys.exit(1)
  print(f'Final {results["split"]} accuracy at step {results["step"]}: '
        f'top-1 {results["top1"]:.2%}, top-5 {results["top5"]:.2%} on '
        f'{results["num_examples"]}/{results["num_examples_in_split"]} '
        'videos.')
  workdir = trainer.prepare_workdir(_WORKDIR.value)
  print(f'Checkpoints: {workdir}/checkpoints\n'
        f'TensorBoard logs: {workdir} (tensorboard --logdir {workdir})\n'
        f'Results: {workdir}/eval_results.json, curves: {workdir}/curves.png')


def run():
  logging.set_verbosity(logging.WARNING)
  app.run(main)


if __name__ == '__main__':
  run()
