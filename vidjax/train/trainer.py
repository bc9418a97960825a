"""Train and evaluate a video classifier, top to bottom (big_vision style).

config (validated) → workdir → data → model → mesh → eval_shape(init) →
shardings → jit(init) → resume → jit(train_step, donate) → loop (log,
checkpoint) → eval.
"""
import math
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
from vidjax.inference import contract as contract_lib
from vidjax.models import complexity
from vidjax.parallel import distributed
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import checkpoint, evaluate, report
from vidjax.train import history as history_lib
from vidjax.train import init_from as init_from_lib
from vidjax.train import periodic_eval
from vidjax.train import preemption
from vidjax.train import progress as progress_lib
from vidjax.train import setup as setup_lib
from vidjax.train import workdir as workdir_lib


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


def _init_from(config, setup, state) -> tuple[TrainState, list[str]]:
  """Overlays converted weights (config.init_from) on a fresh state.

  The fresh state stays on the devices (only its shapes and the kept-fresh
  head are used) and every loaded array goes straight to its shards.
  Returns the state and the names of the variables kept fresh.
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
                       opt_state=opt_state), kept_fresh


def prepare_data(data_config):
  """Renders an embedded dataset once, from process 0; the others wait.

  Datasets the user prepares are only opened (read-only) by every process.
  """
  renders = sources.is_rendered(data_config)
  if jax.process_index() == 0 and sources.prepare(data_config):
    print(f'Rendered {data_config.name} (once, by process 0)', flush=True)
  if renders and jax.process_count() > 1:
    distributed.barrier('dataset rendered', 'render the dataset')


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       evaluate_untrained: bool = False) -> dict:
  """Trains `config`'s model, checkpointing into `workdir`.

  `evaluate_untrained` lets total_steps=0 evaluate a random initialisation
  (a chance baseline for tests and studies; the command line never does).

  Returns:
    The evaluation results (as written to `eval_results.json`) plus
    'workdir', the absolute path everything was written to, and the paths
    of what was written there: 'checkpoints' (None if no checkpoint exists)
    and 'curves' (None if there was nothing to plot).
  """
  # ----------------------------------------------------------------- Config.
  # vidjax.main validated it at load; library callers get the same checks.
  config_lib.validate(config)

  # ---------------------------------------------------------------- Workdir.
  workdir = prepare_workdir(workdir)
  is_chief = jax.process_index() == 0

  def tell(line):
    if is_chief:
      print(line, flush=True)

  # Before anything is built, and before config.json (the evidence) is
  # replaced: written once the checkpoint is restored, below.
  workdir_lib.check_same_model(workdir, config)
  workdir_lib.check_something_to_evaluate(config, workdir, evaluate_untrained)
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
  # Saved with every checkpoint: how to make this model's clips from a video.
  saved_with = {checkpoint.CONTRACT_KEY: contract_lib.from_config(
      config, num_classes=meta.num_classes, class_names=meta.class_names,
      preparation=contract_lib.preparation_of(meta.metadata)).to_dict()}

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
    tell(f'Ignoring {step_dir}: a save that was interrupted before it '
         'completed')
  manager = checkpoint.make_manager(
      workdir, save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints)
  best_manager = (checkpoint.make_best_manager(
      workdir, periodic.best_metric, periodic.best_mode)
                  if periodic.best_metric else None)
  with setup.context():
    # Falls back past damaged steps, saying which; another model's or
    # shape's checkpoint is one line.
    start_step, state = checkpoint.restore_newest_intact(
        manager, setup.abstract_state, say=tell)
    resumed = state is not None
    kept_fresh = []
    if not resumed:
      start_step = 0
      state = setup.init(rng)
      if config.init_from:
        state, kept_fresh = _init_from(config, setup, state)
    else:
      tell(f'Resuming from checkpoint at step {start_step} in {workdir}')
  if best_manager is not None:
    checkpoint.set_aside_best_after(best_manager, start_step, say=tell)
  if start_step >= total_steps:
    tell(_no_training_line(config, start_step, kept_fresh, manager))
  # The whole run's curves: what came before the resumed step, from disk.
  history = history_lib.History.resume(workdir, start_step, say=tell)
  interval = history.interval_at(start_step)
  # Killed between a step's save and its validation: validate it first.
  revalidate = (resumed and periodic.due(start_step)
                and not history.has(start_step, 'val/'))
  if (periodic.test_checkpoint == 'best' and best_manager.best_step() is None
      and not revalidate
      and not periodic.runs_between(start_step, total_steps)):
    raise VidjaxError(
        f"config.test_checkpoint='best', but no validation runs in steps "
        f'{start_step + 1}..{total_steps} (config.eval_every_steps='
        f'{periodic.every}) and {best_manager.directory} holds no best '
        "checkpoint: there would be no best to test; lower "
        "config.eval_every_steps or test 'last'")
  if is_chief:  # The run is on: its config replaces the previous one.
    workdir_lib.write_json(os.path.join(workdir, workdir_lib.CONFIG),
                           config.to_dict())

  # -------------------------------------------------------------- Loop.
  setup.train_step = distributed.meet_before_first_call(
      setup.train_step, 'reach the first step')
  stop = preemption.StopSignal()

  def validate(step):
    t0 = time.monotonic()
    val = evaluate.evaluate(
        model, state, config, mesh, meta, eval_step=setup.eval_step,
        video_sharding=setup.video_sharding, split=periodic.split,
        views=periodic.views)
    val_scalars = periodic.scalars(val)
    writer.write_scalars(step, val_scalars)
    history.add({'step': step, **val_scalars})
    if best_manager is not None:
      score = val_scalars[periodic.best_metric]
      if math.isfinite(score):
        checkpoint.save_scored(best_manager, step, state, val_scalars,
                                custom_metadata=saved_with)
      else:  # orbax would rank it anywhere: sorting ignores nan's order.
        tell(f'step {step} | {periodic.best_metric} is {score}: not a '
             'candidate for the best checkpoint')
    seconds = time.monotonic() - t0
    progress.pause(seconds)
    tell(periodic.line(step, val, seconds))

  progress = progress_lib.TrainProgress(
      total_steps=total_steps, batch_size=config.batch_size,
      every_steps=config.log_every_steps, writer=writer)
  step = start_step
  input_counts = None  # Running totals of skipped/padded training records.
  try:
    with setup.context():
      if revalidate:
        validate(start_step)
        if is_chief:
          history.write()
      train_iter = (input_shards.train_batches(config, start_step)
                    if step < total_steps else None)
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
        changed = reporting
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
          history.add({'step': step, **scalars})
          tell(progress.line(step, scalars))
        saved = checkpoint.save(manager, step, state,
                                force=step == total_steps,
                                custom_metadata=saved_with)
        if periodic.due(step):
          validate(step)
          changed = True
        # Every process answers the same at the same step (a sync point
        # across hosts), so all of them save this step and stop together.
        stopping = stop.reached(step)
        if stopping and manager.latest_step() != step:  # May have saved.
          saved = checkpoint.save(manager, step, state, force=True,
                                  custom_metadata=saved_with)
        if is_chief and (changed or saved):
          # A save keeps the open interval's sums for the resume.
          history.write(
              open_interval=(step, jax.device_get(interval)) if saved
              else None,
              saved_steps=manager.all_steps() if saved else None)
        if stopping:
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
    why_not = None
    if best_step is None:
      why_not = (f'no validation saved a best checkpoint in '
                 f'{best_manager.directory} (no finite '
                 f'{periodic.best_metric})')
    elif best_step != step:
      with setup.context():
        best_state, why_not = checkpoint.restore_best(
            best_manager, best_step, setup.abstract_state, say=tell)
      if best_state is not None:
        state = best_state
    if why_not:
      tell(f"config.test_checkpoint='best', but {why_not}: testing the last "
           f'checkpoint (step {step}) instead')
      tested = {'which': 'last', 'step': step, 'reason': why_not}
    else:
      tested = {'which': 'best', 'step': best_step,
                'metric': periodic.best_metric}
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
  curves = None
  if is_chief:
    # Said before it is written: a full disk then loses no number.
    print(evaluate.summary(results), flush=True)
    workdir_lib.write_json(os.path.join(workdir, 'eval_results.json'),
                           results)
    history.write()
    if history.entries:
      curves = os.path.join(workdir, 'curves.png')
      report.plot_curves(history.entries, curves)
  checkpoints = (os.fspath(manager.directory)
                 if manager.latest_step() is not None else None)
  manager.close()
  if best_manager is not None:
    best_manager.close()
  return {**results, 'workdir': workdir, 'checkpoints': checkpoints,
          'curves': curves}


def _no_training_line(config, start_step: int, kept_fresh: list[str],
                      manager) -> str:
  """What a run with no step left to train evaluates, said loudly."""
  if start_step:
    what = f'the checkpoint at step {start_step} in {manager.directory}'
    if config.total_steps:
      return (f'No training: {what} already reaches config.total_steps='
              f'{config.total_steps}; evaluating it')
  elif config.init_from:
    if kept_fresh:
      raise VidjaxError(
          f'config.total_steps=0 would evaluate the weights of '
          f'{config.init_from}, but {", ".join(kept_fresh)} '
          f'{"are" if len(kept_fresh) > 1 else "is"} freshly initialised '
          '(another class count): its predictions are random; train '
          '(config.total_steps > 0) first')
    what = f'the weights of {config.init_from}'
  else:
    what = f'the untrained model (random initialisation, seed {config.seed})'
  return f'No training (total_steps=0): evaluating {what}'
