"""One pass over the evaluation split: top-1/top-5 and the example count."""
import jax
import ml_collections

from vidjax.data import pipeline
from vidjax.parallel import mesh as mesh_lib
from vidjax.train import losses, metrics


def evaluate(model, state, config: ml_collections.ConfigDict, mesh,
             meta) -> dict:
  """Evaluates `state` on `config.data.eval_split` (centre clip and crop).

  The last batch is padded and masked, so every example counts exactly once
  whatever the batch size.
  """
  split = config.data.eval_split

  def eval_step(state, batch):
    logits = model.apply(
        {'params': state.params, 'batch_stats': state.batch_stats},
        batch['video'], train=False)
    per_example = losses.softmax_cross_entropy(logits, batch['label'])
    return metrics.batch_metrics(logits, batch['label'], batch['mask'],
                                 per_example)

  eval_step = jax.jit(eval_step, out_shardings=mesh_lib.replicated(mesh))
  dataset = pipeline.build_dataset(
      config.data, split, train=False,
      batch_size=config.eval_batch_size // jax.process_count(),
      seed=config.seed, process_index=jax.process_index(),
      process_count=jax.process_count())
  totals = None
  for local_batch in dataset.as_numpy_iterator():
    sums = jax.device_get(eval_step(state,
                                    mesh_lib.to_global_batch(local_batch,
                                                             mesh)))
    totals = sums if totals is None else {k: totals[k] + sums[k]
                                          for k in totals}
  count = int(totals['count']) if totals else 0
  if count == 0:
    return {'split': split, 'num_examples': 0, 'top1': float('nan'),
            'top5': float('nan'), 'loss': float('nan'),
            'num_examples_in_split': meta.num_examples[split]}
  return {
      'split': split,
      'num_examples': count,
      'num_examples_in_split': int(meta.num_examples[split]),
      'top1': float(totals['top1'] / count),
      'top5': float(totals['top5'] / count),
      'loss': float(totals['loss'] / count),
  }
