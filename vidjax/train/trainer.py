"""Train and evaluate a video classifier, top to bottom (big_vision style).

config → workdir → data → model → mesh → eval_shape(init) → shardings →
jit(init) → resume → jit(train_step, donate) → loop (log, checkpoint) → eval.
"""
import json
import os
import signal
import time
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metric_writers

from vidjax.data import pipeline
from vidjax.errors import VidjaxError
from vidjax.models import complexity
from vidjax.models import create_model
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import checkpoint, evaluate, losses, metrics, optim, report
from vidjax.train import init_from as init_from_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def prepare_workdir(workdir: str) -> str:
  """Creates `workdir` and proves it writable before any compute is spent."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f'.write_test_{os.getpid()}')
    with open(probe, 'w') as f:
      f.write('ok')
    os.remove(probe)
  except OSError as e:
    raise VidjaxError(f'workdir {workdir} is not writable: '
                      f'{e.strerror or e}') from None
  return workdir


def write_json(path: str, payload: dict):
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(payload, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


class Progress:
  """One log line per interval: step, loss, steps/s, clips/s and ETA."""

  def __init__(self, first_step: int, total_steps: int, batch_size: int):
    self.total = total_steps
    self.batch_size = batch_size
    self.mark_step, self.mark_time = first_step, None

  def line(self, step: int, scalars: dict) -> str:
    now = time.monotonic()
    if self.mark_time is None:  # First interval includes compilation.
      rate = float('nan')
    else:
      rate = (step - self.mark_step) / max(now - self.mark_time, 1e-9)
    self.mark_step, self.mark_time = step, now
    eta = (self.total - step) / rate if rate == rate and rate > 0 else None
    eta_text = '?' if eta is None else time.strftime('%M:%S', time.gmtime(eta))
    if eta is not None and eta >= 3600:
      eta_text = f'{eta / 3600:.1f}h'
    return (f'step {step}/{self.total} | loss {scalars["train/loss"]:.4f} | '
            f'top1 {scalars["train/top1"]:.3f} | lr {scalars["train/lr"]:.4g}'
            f' | {rate:.2f} steps/s, {rate * self.batch_size:.1f} clips/s | '
            f'ETA {eta_text}')


def _init_from(config, state: TrainState, tx, state_sharding) -> TrainState:
  """Overlays converted weights (config.init_from) on a fresh state."""
  fresh = jax.device_get({'params': state.params,
                          'batch_stats': state.batch_stats})
  merged, kept_fresh = init_from_lib.load(config.init_from,
                                          config.model_name, fresh)
  print(f'Initialised from {config.init_from}'
        + (f'; kept fresh: {", ".join(kept_fresh)}' if kept_fresh else ''),
        flush=True)
  params, batch_stats = merged['params'], merged.get('batch_stats', {})
  # The optimizer state starts over for the new parameters.
  state = state.replace(params=params, batch_stats=batch_stats,
                        opt_state=tx.init(params))
  return jax.device_put(state, state_sharding)


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """Trains `config`'s model, checkpointing into `workdir`.

  Returns:
    The evaluation results (as written to `eval_results.json`) plus
    'workdir', the absolute path everything was written to.
  """
  # ---------------------------------------------------------------- Workdir.
  workdir = prepare_workdir(workdir)
  is_chief = jax.process_index() == 0
  if is_chief:
    write_json(os.path.join(workdir, 'config.json'), config.to_dict())
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_chief, asynchronous=False)

  # ------------------------------------------------------------------- Data.
  meta = pipeline.dataset_info(config.data)
  for split in (config.data.train_split, config.data.eval_split):
    if split not in meta.num_examples:
      raise VidjaxError(
          f'dataset {config.data.name!r} has no split {split!r}; available: '
          f'{", ".join(sorted(meta.num_examples))}')
  n_dev, n_proc = jax.device_count(), jax.process_count()
  for key in ('batch_size', 'eval_batch_size'):
    if config[key] % n_dev:
      raise VidjaxError(f'config.{key}={config[key]} must be divisible by '
                        f'the {n_dev} devices')

  # ------------------------------------------------------------------ Model.
  model = create_model(config.model_name, num_classes=meta.num_classes,
                       **config.model.to_dict())
  total_steps = config.total_steps
  tx = optim.make_optimizer(config.optimizer, total_steps)
  clip_shape = (config.data.num_frames, config.data.crop_size,
                config.data.crop_size, 3)

  def init(rng):
    variables = model.init({'params': rng, 'dropout': rng},
                           jnp.zeros((1, *clip_shape), jnp.float32))
    params = variables['params']
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params))

  # ------------------------------------------------- Mesh and shardings.
  mesh = mesh_lib.make_mesh()
  rng = jax.random.key(config.seed)
  abstract_state = jax.eval_shape(init, rng)
  state_sharding = jax.tree.map(lambda _: mesh_lib.replicated(mesh),
                                abstract_state)
  data_sharding = mesh_lib.batch_sharding(mesh)
  num_params = complexity.count_params(abstract_state.params)
  logging.info('model %s: %d parameters, mesh %s', config.model_name,
               num_params, dict(mesh.shape))

  # ---------------------------------------------------- Init or resume.
  manager = checkpoint.make_manager(
      workdir, save_every_steps=config.checkpoint_every_steps,
      keep=config.keep_checkpoints)
  restore_target = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      abstract_state, state_sharding)
  start_step, state = checkpoint.restore_latest(manager, restore_target)
  if state is None:
    start_step = 0
    state = jax.jit(init, out_shardings=state_sharding)(rng)
    if config.get('init_from'):
      state = _init_from(config, state, tx, state_sharding)
  else:
    print(f'Resuming from checkpoint at step {start_step} in {workdir}',
          flush=True)

  # ------------------------------------------------------------- Steps.
  def train_step(state: TrainState, batch, rng):
    dropout_rng = jax.random.fold_in(rng, state.step)

    def loss_fn(params):
      logits, new_vars = model.apply(
          {'params': params, 'batch_stats': state.batch_stats},
          batch['video'], train=True, mutable=['batch_stats'],
          rngs={'dropout': dropout_rng})
      per_example = losses.softmax_cross_entropy(
          logits, batch['label'], config.label_smoothing)
      # Masked: only a stream starting on a skipped record has mask 0 rows.
      loss = (jnp.sum(per_example * batch['mask'])
              / jnp.maximum(jnp.sum(batch['mask']), 1.0))
      return loss, (logits, per_example, new_vars)

    grads, (logits, per_example, new_vars) = jax.grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(
        step=state.step + 1, params=optax.apply_updates(state.params, updates),
        batch_stats=new_vars.get('batch_stats', state.batch_stats),
        opt_state=opt_state)
    sums = metrics.batch_metrics(logits, batch['label'], batch['mask'],
                                 per_example)
    sums['lr'] = optim.learning_rate_schedule(
        config.optimizer, total_steps)(state.step)
    return new_state, sums

  batch_shardings = {'video': data_sharding, 'label': data_sharding,
                     'mask': data_sharding}
  train_step = jax.jit(
      train_step, in_shardings=(state_sharding, batch_shardings,
                                mesh_lib.replicated(mesh)),
      out_shardings=(state_sharding, mesh_lib.replicated(mesh)),
      donate_argnums=(0,))

  # -------------------------------------------------------------- Loop.
  stop = {'signal': None}

  def on_signal(signum, _):
    stop['signal'] = signum

  previous = {s: signal.signal(s, on_signal)
              for s in (signal.SIGTERM, signal.SIGINT)}
  history, interval = [], []
  progress = Progress(start_step, total_steps, config.batch_size)
  # The stream is a pure function of (seed, step), so a resumed run sees
  # exactly the batches an uninterrupted one would have.
  train_iter = pipeline.build_dataset(
      config.data, config.data.train_split, train=True,
      batch_size=config.batch_size // n_proc, seed=config.seed,
      start_step=start_step, process_index=jax.process_index(),
      process_count=n_proc).as_numpy_iterator()
  step = start_step
  input_counts = None  # Running totals of skipped/padded training records.
  try:
    while step < total_steps:
      local = next(train_iter)
      input_counts = local.pop('counts')[-1]
      batch = mesh_lib.to_global_batch(local, mesh)
      state, sums = train_step(state, batch, rng)
      interval.append(sums)
      step += 1
      if step % config.log_every_steps == 0 or step == total_steps:
        # Averages over the whole interval, not the last (noisy) batch.
        interval = jax.device_get(interval)
        count = sum(float(s['count']) for s in interval)
        scalars = {f'train/{k}': sum(float(s[k]) for s in interval) / count
                   for k in ('loss', 'top1', 'top5')}
        scalars['train/lr'] = float(interval[-1]['lr'])
        interval = []
        writer.write_scalars(step, scalars)
        history.append({'step': step, **scalars})
        if is_chief:
          print(progress.line(step, scalars), flush=True)
      checkpoint.save(manager, step, state, force=step == total_steps)
      if stop['signal'] is not None:
        if manager.latest_step() != step:  # This step may just have saved.
          checkpoint.save(manager, step, state, force=True)
        raise VidjaxError(
            f'stopped by signal {stop["signal"]} at step {step}; checkpoint '
            f'saved in {manager.directory}, rerun the same command to resume')
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    writer.flush()

  # -------------------------------------------------------------- Eval.
  results = evaluate.evaluate(model, state, config, mesh, meta)
  results['step'] = step
  results['train_input'] = evaluate.input_counts(input_counts)
  writer.write_scalars(step, {f'eval/{k}': v for k, v in results.items()
                              if k in ('top1', 'top5', 'loss')})
  writer.flush()
  if is_chief:
    write_json(os.path.join(workdir, 'eval_results.json'), results)
    print(evaluate.summary(results), flush=True)
    if history:
      report.plot_curves(history, os.path.join(workdir, 'curves.png'))
  manager.close()
  return {**results, 'workdir': workdir}
