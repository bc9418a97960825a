"""Entry point: `python -m vidjax.main --config=configs/demo.py --workdir=DIR`.

`--config.key=value` overrides a config field; an unknown key is an error.
User errors print one line (`--verbose` shows the traceback) and exit 1;
a preempted run exits 75 after saving (rerun to resume). On a CPU, with no
XLA_FLAGS set, XLA:CPU runs with the flags measured fastest for training
(`vidjax.platform.CPU_TRAINING_XLA_FLAGS`, said once in the log).
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from vidjax import cli
from vidjax import config as config_lib
from vidjax import platform
from vidjax.errors import VidjaxError

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py), optionally '
    'followed by :ARG for its get_config(ARG).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints, logs and results.')
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
  config = cli.load_config(_CONFIG)
  config_lib.validate(config)
  results = trainer.train_and_evaluate(config, _WORKDIR.value)
  print(final_message(results))


def final_message(results: dict) -> str:
  """The run's result and the files it left, only those that exist."""
  workdir = results['workdir']
  lines = [
      f'Final {results["split"]} accuracy at step {results["step"]}: '
      f'top-1 {results["top1"]:.2%}, top-5 {results["top5"]:.2%} on '
      f'{results["num_examples"]}/{results["num_examples_in_split"]} '
      'videos.']
  if results.get('checkpoints'):
    lines.append(f'Checkpoints: {results["checkpoints"]}')
  lines.append(f'TensorBoard logs: {workdir} (tensorboard --logdir '
               f'{workdir})')
  curves = (f', curves: {results["curves"]}' if results.get('curves')
            else '')
  lines.append(f'Results: {workdir}/eval_results.json{curves}')
  return '\n'.join(lines)


def initialize_distributed():
  """jax.distributed.initialize for multi-process runs (see the flags)."""
  import jax  # pylint: disable=g-import-not-at-top
  if _COORDINATOR.value:
    if _NUM_PROCESSES.value is None or _PROCESS_ID.value is None:
      raise VidjaxError('--coordinator_address needs --num_processes and '
                        '--process_id')
    if not platform.tpu_attached():
      # Collectives across CPU processes.
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value,
                               _PROCESS_ID.value)
  elif platform.tpu_attached():
    jax.distributed.initialize()


def run():
  cli.run(main, cpu_xla_flags=platform.CPU_TRAINING_XLA_FLAGS)


if __name__ == '__main__':
  run()
