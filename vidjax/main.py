"""Entry point: `python -m vidjax.main --config=configs/demo.py --workdir=DIR`.

`--config.key=value` overrides a config field; an unknown key is an error.
User errors print one line (`--verbose` shows the traceback) and exit 1.
"""
import os

# Before TensorFlow loads (configs import the data pipeline): its oneDNN
# banner and C++ info logs would bury our one-line errors. TF only decodes
# JPEGs here, so its oneDNN graph rewrites are irrelevant.
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
from vidjax import platform  # pylint: disable=g-import-not-at-top

platform.prefer_cpu_without_accelerator()

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

from vidjax import cli
from vidjax import config as config_lib
from vidjax.errors import VidjaxError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py), optionally '
    'followed by :ARG for its get_config(ARG).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints, logs and results.')
_VERBOSE = flags.DEFINE_bool('verbose', False,
                             'Show tracebacks for user errors.')
# Multi-process runs. TPU VMs need none of these: jax.distributed.initialize()
# finds the other hosts itself. Elsewhere (CPU or GPU clusters, tests) name
# the coordinator and this process.
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 for '
    'jax.distributed.initialize (not needed on TPU VMs).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process, 0 … num_processes-1.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Imported here so that flag errors answer before TF and JAX load.
  from vidjax.train import trainer  # pylint: disable=g-import-not-at-top

  initialize_distributed()

  try:
    # config_flags defers a config file's load error until first access.
    config = _CONFIG.value
    config.keys()
    config_lib.validate(config)
  except (OSError, VidjaxError) as e:
    fail(e, verbose=_VERBOSE.value)
  try:
    results = trainer.train_and_evaluate(config, _WORKDIR.value)
  except VidjaxError as e:
    fail(e, verbose=_VERBOSE.value, code=getattr(e, 'exit_code', 1))
  print(f'Final {results["split"]} accuracy at step {results["step"]}: '
        f'top-1 {results["top1"]:.2%}, top-5 {results["top5"]:.2%} on '
        f'{results["num_examples"]}/{results["num_examples_in_split"]} '
        'videos.')
  workdir = results['workdir']
  print(f'Checkpoints: {workdir}/checkpoints\n'
        f'TensorBoard logs: {workdir} (tensorboard --logdir {workdir})\n'
        f'Results: {workdir}/eval_results.json, curves: {workdir}/curves.png')


def _root_cause(error: BaseException) -> BaseException:
  while error.__cause__ is not None:
    error = error.__cause__
  return error


def initialize_distributed():
  """jax.distributed.initialize for multi-process runs (see the flags)."""
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      cli.exit_with_error('--coordinator_address needs --num_processes and '
                          '--process_id')
    if not platform.tpu_attached():
      # Collectives across CPU processes.
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  elif platform.tpu_attached():
    jax.distributed.initialize()


def fail(error: BaseException, verbose: bool, code: int = 1):
  """Prints `error` as one line and exits `code` (re-raises with --verbose)."""
  if verbose:
    raise error
  cause = _root_cause(error)
  if isinstance(cause, OSError) and cause.filename:
    message = f'cannot read config file {cause.filename}: {cause.strerror}'
  elif isinstance(cause, OSError) and 'Errno 2' in str(cause):
    lines = [l.strip() for l in str(cause).splitlines() if l.strip()]
    message = f'cannot read config file: {lines[-1]}'
  elif isinstance(cause, (KeyError, AttributeError)):
    message = f"unknown config key '{str(cause).strip(chr(34) + chr(39))}'"
  else:
    message = ' '.join(str(cause).split())
  cli.exit_with_error(message, code)


def run():
  logging.set_verbosity(logging.WARNING)
  app.run(main, flags_parser=cli.flags_parser(fail))


if __name__ == '__main__':
  run()
