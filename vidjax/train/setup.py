"""The train state, its shardings and the jitted steps, from a config.

`build(config, num_classes, mesh)` is what the trainer and the AOT tool
(vidjax/tools/aot/) share, so the step compiled ahead of time for a TPU
is the step that trains:

  model (logical names) → eval_shape(boxed init) → rules → state shardings
  → jit(init, out_shardings) → jit(train_step, in/out shardings, donated
  state) and jit(eval_step).

Everything here is abstract until called: no device memory is touched, so
the same code lowers for devices that are not attached (TPU topologies).
Trace and run the steps inside `setup.context()`, which makes the mesh
and the logical axis rules current for the models' sharding constraints.
"""
import contextlib
import dataclasses
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from vidjax.errors import VidjaxError
from vidjax.models import create_model
from vidjax.parallel import mesh as mesh_lib
from vidjax.parallel import rules as rules_lib
from vidjax.parallel import state as state_lib
from vidjax.train import losses, metrics, optim


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


@dataclasses.dataclass
class Setup:
  """A config's model, mesh, state shardings and jitted steps."""
  config: ml_collections.ConfigDict
  model: nn.Module
  tx: optax.GradientTransformation
  mesh: jax.sharding.Mesh
  rules: tuple
  clip_shape: tuple[int, ...]
  abstract_state: Any            # ShapeDtypeStructs with shardings.
  state_sharding: Any
  batch_sharding: dict[str, NamedSharding]
  init: Callable                 # rng → TrainState, sharded.
  train_step: Callable           # (state, batch, rng) → (state, sums).
  eval_step: Callable            # (state, video) → log-probabilities.

  def context(self) -> contextlib.AbstractContextManager[None]:
    """The mesh and rules under which the steps trace (and run)."""
    return rules_lib.mesh_and_rules(self.mesh, self.rules)

  def abstract_batch(self, batch_size: int) -> dict:
    """The train step's batch as sharded ShapeDtypeStructs."""
    shapes = {'video': ((batch_size, *self.clip_shape), jnp.float32),
              'label': ((batch_size,), jnp.int32),
              'mask': ((batch_size,), jnp.float32)}
    return {k: jax.ShapeDtypeStruct(shape, dtype,
                                    sharding=self.video_sharding(batch_size)
                                    if k == 'video' else
                                    self.batch_sharding['label'])
            for k, (shape, dtype) in shapes.items()}

  def video_sharding(self, batch_size: int) -> NamedSharding:
    """Clips split over 'data' by batch and over 'time' along T (the rules).

    Depends on the batch size only through the fallback for axes that do
    not divide (rules.fit_spec).
    """
    spec = nn.logical_to_mesh_axes(rules_lib.VIDEO, self.rules)
    return NamedSharding(self.mesh, rules_lib.fit_spec(
        (batch_size, *self.clip_shape), spec, dict(self.mesh.shape)))


def bn_groups(config, mesh) -> int:
  """Statistic groups along the batch from `config.bn_sync_devices`.

  0: one group, the global batch (synchronised BN, the default: the result
  does not depend on the mesh). k: groups of k devices along 'data'
  (PySlowFast's NUM_SYNC_DEVICES); k=1 is per-device BN as in the S3D-G
  paper's TF training (statistics of each replica's clips).
  """
  k = config.bn_sync_devices
  data = mesh.shape[mesh_lib.DATA_AXIS]
  if not k:
    return 1
  if k < 0 or data % k:
    raise VidjaxError(f'config.bn_sync_devices={k} must divide the data '
                      f'axis of the mesh ({data})')
  return data // k


def make_model(config, num_classes: int, mesh, **overrides) -> nn.Module:
  options = {**config.model.to_dict(), **overrides}
  model = create_model(config.model_name, num_classes=num_classes, **options)
  groups = bn_groups(config, mesh)
  if groups > 1:
    if not hasattr(model, 'bn_groups'):
      raise VidjaxError(f'model {config.model_name!r} has no batch norm to '
                        'synchronise (config.bn_sync_devices)')
    model = model.clone(bn_groups=groups)
  return model


def make_train_step(model, tx, config, total_steps: int):
  """(state, batch, rng) → (state, metric sums); pure, unjitted."""

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
        batch_stats=nn.unbox(new_vars.get('batch_stats', state.batch_stats)),
        opt_state=opt_state)
    sums = metrics.batch_metrics(logits, batch['label'], batch['mask'],
                                 per_example)
    sums['lr'] = optim.learning_rate_schedule(
        config.optimizer, total_steps)(state.step)
    return new_state, sums

  return train_step


def make_eval_step(model):
  def eval_step(state, video):
    logits = model.apply(
        {'params': state.params, 'batch_stats': state.batch_stats},
        video, train=False)
    return jax.nn.log_softmax(logits.astype(jnp.float32))
  return eval_step


def build(config: ml_collections.ConfigDict, num_classes: int,
          mesh: jax.sharding.Mesh | None = None, *,
          total_steps: int | None = None, **model_overrides) -> Setup:
  """The model, state shardings and jitted steps of `config` on `mesh`."""
  mesh = mesh or mesh_lib.make_mesh(config.mesh)
  rules = rules_lib.as_rules(config.logical_axis_rules)
  rules_lib.validate(rules, mesh.axis_names)
  model = make_model(config, num_classes, mesh, **model_overrides)
  total_steps = config.total_steps if total_steps is None else total_steps
  tx = optim.make_optimizer(config.optimizer, total_steps)
  clip_shape = (config.data.num_frames, config.data.crop_size,
                config.data.crop_size, 3)
  mesh_lib.check_frames(config.data.num_frames, mesh, rules)

  def boxed_init(rng):
    variables = model.init({'params': rng, 'dropout': rng},
                           jnp.zeros((1, *clip_shape), jnp.float32))
    params = variables['params']
    # optax's states mirror the boxed parameters, names included.
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get('batch_stats', {}),
                      opt_state=tx.init(params))

  with rules_lib.mesh_and_rules(mesh, rules):
    # The key is made inside the trace: an eager one would run on the mesh's
    # devices, which the AOT tool's compile-only TPU devices cannot.
    abstract_boxed = jax.eval_shape(lambda: boxed_init(jax.random.key(0)))
  state_sharding = state_lib.shardings(abstract_boxed, mesh, rules,
                                       fsdp=config.fsdp)
  abstract_state = jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
      nn.unbox(abstract_boxed), state_sharding)
  rows = NamedSharding(mesh, rules_lib.fit_spec(
      (config.batch_size,), nn.logical_to_mesh_axes(('batch',), rules),
      dict(mesh.shape)))
  replicated = mesh_lib.replicated(mesh)

  init = jax.jit(lambda rng: nn.unbox(boxed_init(rng)),
                 out_shardings=state_sharding)
  setup = Setup(
      config=config, model=model, tx=tx, mesh=mesh, rules=rules,
      clip_shape=clip_shape, abstract_state=abstract_state,
      state_sharding=state_sharding,
      batch_sharding={'label': rows, 'mask': rows}, init=init,
      train_step=None, eval_step=None)
  setup.batch_sharding['video'] = setup.video_sharding(config.batch_size)
  setup.train_step = jax.jit(
      make_train_step(model, tx, config, total_steps),
      in_shardings=(state_sharding, setup.batch_sharding, replicated),
      out_shardings=(state_sharding, replicated), donate_argnums=(0,))
  # Evaluation batches vary in size (padded to the devices), so the video's
  # sharding comes with the array; the state keeps the train shardings.
  setup.eval_step = jax.jit(
      make_eval_step(model), in_shardings=(state_sharding, None),
      out_shardings=NamedSharding(mesh, P(mesh_lib.DATA_AXIS)))
  return setup
