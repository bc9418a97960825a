"""Top-k accuracy counts, masked so padded evaluation examples do not count."""
import jax
import jax.numpy as jnp


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
  """1.0 where the label is among the k highest logits, per example.

  Ties are broken against the label: an example only counts as correct if
  fewer than k classes score strictly higher *or equal* — so a constant
  output (an untrained or collapsed model) scores 0, not 1.
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  higher_or_equal = jnp.sum(logits >= label_logit, axis=-1) - 1
  return (higher_or_equal < k).astype(jnp.float32)


def batch_metrics(logits, labels, mask, loss) -> dict[str, jax.Array]:
  """Sums over a batch; divide by `count` after summing over batches."""
  return {
      'count': jnp.sum(mask),
      'loss': jnp.sum(loss * mask),
      'top1': jnp.sum(topk_correct(logits, labels, 1) * mask),
      'top5': jnp.sum(topk_correct(logits, labels, 5) * mask),
  }
