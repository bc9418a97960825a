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
from vidjax.parallel import distributed

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path to a config file (configs/*.py), optionally '
    'followed by :ARG for its get_config(ARG).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None,
                               'Directory for checkpoints, logs and results.')
# Multi-process runs. TPU VMs need none of these: jax.distributed.initialize()
# finds the other hosts itself. Elsewhere (CPU or GPU clusters, tests) name
# the coordinator and this process. vidjax/parallel/distributed.py says how
# the processes wait for each other.
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 for '
    'jax.distributed.initialize (not needed on TPU VMs).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process, 0 … num_processes-1.')
# A flag, not a config key: the processes wait for each other before the
# config is loaded.
_PEER_TIMEOUT = flags.DEFINE_float(
    'peer_timeout_s', distributed.DEFAULT_TIMEOUT_S,
    'Seconds a process waits for the others, at start-up and before the '
    'first step, printing which are missing; then it ends with an error.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  distributed.check_flags(_COORDINATOR.value, _NUM_PROCESSES.value,
                          _PROCESS_ID.value, _PEER_TIMEOUT.value)
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
  """Starts a multi-process run once every process has come (the flags)."""
  distributed.start(_COORDINATOR.value, _NUM_PROCESSES.value,
                    _PROCESS_ID.value, _PEER_TIMEOUT.value,
                    tpu=platform.tpu_attached())


def run():
  cli.run(main, cpu_xla_flags=platform.CPU_TRAINING_XLA_FLAGS)


if __name__ == '__main__':
  run()
