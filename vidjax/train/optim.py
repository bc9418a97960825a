"""Optimizer: SGD with momentum, linear warm-up + cosine decay, weight decay.

Weight decay is coupled L2 (added to the gradient before momentum), as in
PyTorch's SGD that PySlowFast and MMAction2 use, and it skips BN parameters
and biases: every leaf with fewer than two dimensions.
"""
import jax
import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict,
                           total_steps: int) -> optax.Schedule:
  warmup = min(config.warmup_steps, total_steps)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(total_steps, warmup + 1), end_value=0.0)


def decay_mask(params):
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def make_optimizer(config: ml_collections.ConfigDict,
                   total_steps: int) -> optax.GradientTransformation:
  """`config` is the config's `optimizer` section."""
  return optax.chain(
      optax.add_decayed_weights(config.weight_decay, mask=decay_mask),
      optax.sgd(learning_rate_schedule(config, total_steps),
                momentum=config.momentum, nesterov=config.nesterov))
