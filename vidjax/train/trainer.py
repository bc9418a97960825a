"""Train and evaluate a video classifier, top to bottom (big_vision style).

config (validated) → workdir → data → model → mesh → eval_shape(init) →
shardings → jit(init) → resume → jit(train_step, donate) → loop (log,
checkpoint) → eval.
"""
import json
import os
import time

from etils import epath
import jax
import ml_collections
from absl import logging
from clu import metric_writers

from vidjax import config as config_lib
from vidjax.data import input_shards
from vidjax.data import pipeline
from vidjax.data import preflight
from vidjax.data import sources
from vidjax.errors import VidjaxError
from vidjax.models import complexity
from vidjax.parallel import distributed
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import checkpoint, evaluate, report
from vidjax.train import init_from as init_from_lib
from vidjax.train import periodic_eval
from vidjax.train import preemption
from vidjax.train import progress as progress_lib
from vidjax.train import setup as setup_lib


TrainState = setup_lib.TrainState

# Exit status after a preemption save: sysexits' EX_TEMPFAIL, "try again".
# launch/tpu_vm.py reruns the same command on it, which resumes exactly.
PREEMPTED_EXIT_CODE = 75


class Preempted(VidjaxError):
  """Stopped by a signal after saving a checkpoint; rerun to resume."""
  exit_code = PREEMPTED_EXIT_CODE


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` and proves it writable before any compute is spent.

  A local path or a cloud URL (gs://bucket/dir, through etils.epath), so
  that checkpoints of a TPU VM survive the VM.
  """
  if '://' not in str(workdir):
    workdir = os.path.abspath(os.path.expanduser(workdir))
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f'.write_test_{jax.process_index()}_{os.getpid()}'
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise VidjaxError(f'workdir {workdir} is not writable: '
                      f'{e.strerror or e}') from None
  return str(workdir)


def write_json(path: str, payload: dict):
  tmp = epath.Path(f'{path}.tmp')
  tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
  tmp.replace(path)  # Overwrites, unlike rename.


def _init_from(config, setup, state) -> TrainState:
  """Overlays converted weights (config.init_from) on a fresh state.

  The fresh state stays on the devices (only its shapes and the kept-fresh
  head are used) and every loaded array goes straight to its shards.
  """
  fresh = {'params': state.params, 'batch_stats': state.batch_stats}
  merged, kept_fresh = init_from_lib.load(config.init_from,
                                          config.model_name, fresh,
                                          model=setup.model)
  print(f'Initialised from {config.init_from}'
        + (f'; kept fresh: {", ".join(kept_fresh)}' if kept_fresh else ''),
        flush=True)
  target = {'params': setup.state_sharding.params,
            'batch_stats': setup.state_sharding.batch_stats}
  merged = jax.tree.map(
      lambda v, s: v if isinstance(v, jax.Array) else
      jax.make_array_from_callback(v.shape, s, lambda i, v=v: v[i]),
      merged, target)
  # The optimizer state starts over for the new parameters.
  opt_state = jax.jit(setup.tx.init,
                      out_shardings=setup.state_sharding.opt_state)(
                          merged['params'])
  return state.replace(params=merged['params'],
                       batch_stats=merged.get('batch_stats', {}),
                       opt_state=opt_state)


def prepare_data(data_config):
  """Renders an embedded dataset once, from process 0; the others wait.

  Datasets the user prepares are only opened (read-only) by every process.
  """
  renders = sources.is_rendered(data_config)
  if jax.process_index() == 0 and sources.prepare(data_config):
    print(f'Rendered {data_config.name} (once, by process 0)', flush=True)
  if renders and jax.process_count() > 1:
    distributed.barrier('dataset rendered', 'render the dataset')


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains `config`'s model, checkpointing into `workdir`.

  Returns:
    The evaluation results (as written to `eval_results.json`) plus
    'workdir', the absolute path everything was written to.
  """
  # ----------------------------------------------------------------- Config.
  # vidjax.main validated it at load; library callers get the same checks.
  config_lib.validate(config)

  # ---------------------------------------------------------------- Workdir.
  workdir = prepare_workdir(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_chief, asynchronous=False)

  # ------------------------------------------------------------------- Data.
  prepare_data(config.data)
  meta = pipeline.dataset_info(config.data)
  for split in (config.data.train_split, config.data.eval_split):
    if split not in meta.num_examples:
      raise VidjaxError(
          f'dataset {config.data.name!r} has no split {split!r}; available: '
          f'{", ".join(sorted(meta.num_examples))}')
  periodic = periodic_eval.PeriodicEval.from_config(config, meta)
  preflight.check(config, meta)  # Every shard and setting the run reads.

  # ------------------------------------------- Mesh, model and shardings.
  mesh = mesh_lib.make_mesh(config.mesh)
  for key in ('batch_size', 'eval_batch_size'):
    mesh_lib.check_batch(config[key], mesh, key)
  total_steps = config.total_steps
  setup = setup_lib.build(config, meta.num_classes, mesh)
  model = setup.model
  rng = jax.random.key(config.seed)
  num_params = complexity.count_params(setup.abstract_state.params)
  logging.info('model %s: %d parameters, mesh %s', config.model_name,
               num_params, mesh_lib.describe(mesh))

  # ---------------------------------------------------- Init or resume.
  for step_dir in checkpoint.incomplete_saves(workdir):
    if is_chief:
      print(f'Ignoring {step_dir}: a save that was interrupted before it '
            'completed', flush=True)
  manager = checkpoint.make_manager(
      workdir, save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints)
  best_manager = (checkpoint.make_best_manager(
      workdir, periodic.best_metric, periodic.best_mode)
                  if periodic.best_metric else None)
  with setup.context():
    start_step, state = checkpoint.restore_latest(manager,
                                                  setup.abstract_state)
    if state is None:
      start_step = 0
      state = setup.init(rng)
      if config.init_from:
        state = _init_from(config, setup, state)
    elif is_chief:
      print(f'Resuming from checkpoint at step {start_step} in {workdir}',
            flush=True)

  # -------------------------------------------------------------- Loop.
  setup.train_step = distributed.meet_before_first_call(
      setup.train_step, 'reach the first step')
  stop = preemption.StopSignal()
  history, interval = [], []
  progress = progress_lib.TrainProgress(
      total_steps=total_steps, batch_size=config.batch_size,
      every_steps=config.log_every_steps, writer=writer)
  train_iter = input_shards.train_batches(config, start_step)
  step = start_step
  input_counts = None  # Running totals of skipped/padded training records.
  try:
    with setup.context():
      while step < total_steps:
        local = next(train_iter)
        input_counts = local.pop('counts')[-1]
        batch = mesh_lib.to_global_batch(local, setup.batch_sharding)
        t0 = time.monotonic()
        state, sums = setup.train_step(state, batch, rng)
        interval.append(sums)
        step += 1
        reporting = step % config.log_every_steps == 0 or step == total_steps
        if step == start_step + 1 or reporting:
          # The clock reads steps that ran, not steps dispatched; a report
          # waits for them anyway.
          jax.block_until_ready(sums)
        if step == start_step + 1:
          progress.started(step, time.monotonic() - t0)
        else:
          progress(step)
        if reporting:
          # Averages over the whole interval, not the last (noisy) batch.
          interval = jax.device_get(interval)
          count = sum(float(s['count']) for s in interval)
          scalars = {f'train/{k}': sum(float(s[k]) for s in interval) / count
                     for k in ('loss', 'top1', 'top5')}
          scalars['train/lr'] = float(interval[-1]['lr'])
          interval = []
          counts = evaluate.input_counts(input_counts)
          writer.write_scalars(step, {**scalars, **{
              f'input/{k}': v for k, v in counts.items()}})
          history.append({'step': step, **scalars})
          if is_chief:
            print(progress.line(step, scalars), flush=True)
        checkpoint.save(manager, step, state, force=step == total_steps)
        if periodic.due(step):
          t0 = time.monotonic()
          val = evaluate.evaluate(
              model, state, config, mesh, meta, eval_step=setup.eval_step,
              video_sharding=setup.video_sharding, split=periodic.split,
              views=periodic.views)
          val_scalars = periodic.scalars(val)
          writer.write_scalars(step, val_scalars)
          history.append({'step': step, **val_scalars})
          if best_manager is not None:
            checkpoint.save_scored(best_manager, step, state, val_scalars)
          seconds = time.monotonic() - t0
          progress.pause(seconds)
          if is_chief:
            print(periodic.line(step, val, seconds), flush=True)
        # Every process answers the same at the same step (a sync point
        # across hosts), so all of them save this step and stop together.
        if stop.reached(step):
          if manager.latest_step() != step:  # This step may have saved.
            checkpoint.save(manager, step, state, force=True)
          manager.close()
          raise Preempted(
              f'stopped by {stop.reason} at step {step}; checkpoint saved in '
              f'{manager.directory}, rerun the same command to resume')
  finally:
    stop.close()
    writer.flush()

  # -------------------------------------------------------------- Eval.
  tested = {'which': 'last', 'step': step}
  if periodic.test_checkpoint == 'best':
    best_step = best_manager.best_step()
    if best_step is not None and best_step != step:
      with setup.context():
        state = best_manager.restore(
            best_step, args=checkpoint.restore_args(setup.abstract_state))
    tested = {'which': 'best', 'step': best_step if best_step is not None
              else step, 'metric': periodic.best_metric}
  with setup.context():
    results = evaluate.evaluate(model, state, config, mesh, meta,
                                eval_step=setup.eval_step,
                                video_sharding=setup.video_sharding)
  results['step'] = step
  results['checkpoint'] = tested
  results['train_input'] = evaluate.input_counts(input_counts)
  writer.write_scalars(step, {
      **{f'eval/{k}': v for k, v in results.items()
         if k in ('top1', 'top5', 'loss')},
      **{f'eval/skipped/{k}': v for k, v in results['skipped'].items()}})
  writer.flush()
  if is_chief:
    write_json(os.path.join(workdir, 'eval_results.json'), results)
    print(evaluate.summary(results), flush=True)
    if history:
      report.plot_curves(history, os.path.join(workdir, 'curves.png'))
  manager.close()
  if best_manager is not None:
    best_manager.close()
  return {**results, 'workdir': workdir}
