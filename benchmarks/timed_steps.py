"""The timed steps every model benchmark runs, one definition per framework.

"infer" is one forward pass in evaluation mode; "train" is one forward and
backward pass with BN in training mode plus a plain SGD update, as a
training loop runs it: optax.sgd inside the jitted step with the state
donated (as vidjax's trainer does, so XLA updates it in place as torch
does), and torch.optim.SGD's step. Each returns a no-argument callable
that runs one step to completion, for `harness.run_side`.

Imports are local: a side's process loads only its own framework.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple

LEARNING_RATE = 0.01


def cpu_only():
  """Before importing jax on a CPU benchmark: with jax[tpu] installed, JAX
  would try to load libtpu."""
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


class HostDataParallel(NamedTuple):
  mesh: Any                 # jax.sharding.Mesh of ('data', 'time') = (N, 1).
  context: Callable[[], Any]  # Mesh and logical rules, for tracing.


def host_data_parallel(batch_size: int, num_devices: int | None = None):
  """A context for vidjax's steps on several host CPU devices, or None on one.

  With `--xla_force_host_platform_device_count=N` in XLA_FLAGS, XLA:CPU
  runs N devices side by side on the same cores. Split over them, the batch
  runs as N concurrent programs (data parallel as on a pod: parameters
  replicated, BN statistics over the global batch through the
  partitioner), which keeps both cores busy where one conv alone would
  not (benchmarks/README.md, "Why TSM inference stops short of 1.5x").
  Returns a HostDataParallel; the step traces inside its context, so the
  models' logical constraints see the mesh as in vidjax's trainer.
  `num_devices`: the first that many devices (default: all).
  """
  import jax  # pylint: disable=g-import-not-at-top
  num_devices = num_devices or jax.device_count()
  if num_devices == 1:
    return None
  from vidjax.parallel import mesh as vmesh  # pylint: disable=g-import-not-at-top
  from vidjax.parallel import rules  # pylint: disable=g-import-not-at-top
  mesh = vmesh.make_mesh({'data': num_devices, 'time': 1},
                         jax.devices()[:num_devices])
  vmesh.check_batch(batch_size, mesh, 'batch')
  context = functools.partial(rules.mesh_and_rules, mesh, rules.DEFAULT_RULES)
  return HostDataParallel(mesh, context)


def _place(parallel, variables, *batch):
  """Variables replicated and the batch split over `parallel`'s mesh."""
  import jax  # pylint: disable=g-import-not-at-top
  from vidjax.parallel import mesh as vmesh  # pylint: disable=g-import-not-at-top
  return (jax.device_put(variables, vmesh.replicated(parallel.mesh)),
          *(jax.device_put(x, vmesh.batch_sharding(parallel.mesh))
            for x in batch))


def _within(parallel, fn):
  if parallel is None:
    return fn

  def run():
    with parallel.context():
      return fn()
  return run


def vidjax_infer(model, variables, video, parallel=None):
  """`parallel`: `host_data_parallel`'s result, or None for one device."""
  import jax  # pylint: disable=g-import-not-at-top
  if parallel is not None:
    variables, video = _place(parallel, variables, video)
  forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
  return _within(parallel,
                 lambda: jax.block_until_ready(forward(variables, video)))


def vidjax_train(model, variables, video, labels, parallel=None):
  """`parallel`: `host_data_parallel`'s result, or None for one device."""
  import jax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  tx = optax.sgd(LEARNING_RATE)
  if parallel is not None:
    variables, video, labels = _place(parallel, variables, video, labels)

  @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
  def train_step(params, batch_stats, opt_state, x, y):
    def loss_fn(p):
      logits, updates = model.apply(
          {'params': p, 'batch_stats': batch_stats}, x, train=True,
          mutable=['batch_stats'], rngs={'dropout': jax.random.key(2)})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)
      return loss.mean(), updates
    grads, updates = jax.grad(loss_fn, has_aux=True)(params)
    deltas, opt_state = tx.update(grads, opt_state, params)
    # Models without BN (TimeSformer) return no batch_stats.
    return (optax.apply_updates(params, deltas),
            updates.get('batch_stats', batch_stats), opt_state)

  state = [variables['params'], variables.get('batch_stats', {}),
           tx.init(variables['params'])]

  def step():
    state[:] = train_step(*state, video, labels)
    return jax.block_until_ready(state)
  return _within(parallel, step)


def torch_infer(model, video):
  import torch  # pylint: disable=g-import-not-at-top
  model.eval()

  def step():
    with torch.no_grad():
      model(video)
  return step


def torch_train(model, video, labels):
  import torch  # pylint: disable=g-import-not-at-top
  model.train()
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)

  def step():
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(video), labels).backward()
    optimizer.step()
  return step


def compile_train_step(config, num_classes: int, mesh=None, **overrides):
  """(setup, compiled) of vidjax's train step for `config` on `mesh` (the
  config's own by default): what the HLO benchmarks read collectives from.
  Compiles; runs nothing."""
  import jax  # pylint: disable=g-import-not-at-top
  from vidjax.train import setup as setup_lib  # pylint: disable=g-import-not-at-top
  setup = setup_lib.build(config, num_classes, mesh, **overrides)
  with setup.context():
    compiled = setup.train_step.lower(
        setup.abstract_state, setup.abstract_batch(config.batch_size),
        jax.eval_shape(lambda: jax.random.key(0))).compile()
  return setup, compiled
