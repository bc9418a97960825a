"""Helpers shared by the PyTorch parity tests (import only where torch is)."""
import numpy as np
import torch


def relative_error(actual, reference) -> float:
  """||actual − reference|| / ||reference||, the parity measure."""
  return float(np.linalg.norm(actual - reference) / np.linalg.norm(reference))


def randomise_batch_norm(model, run_batch):
  """Gives every BN non-trivial, well-scaled statistics and affine params.

  Freshly built BN layers are the identity at eval time (mean 0, var 1,
  scale 1, bias 0), which would hide swapped or misnamed BN tensors. Random
  statistics alone make activations drift to ~1e5 over 50+ layers, so the
  statistics are first measured by `run_batch(model)` in training mode
  (momentum None: the cumulative average of one batch, i.e. its batch
  statistics), then perturbed. Leaves the model in eval mode.
  """
  norms = [m for m in model.modules()
           if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]  # pylint: disable=protected-access
  for bn in norms:
    bn.momentum = None
    bn.reset_running_stats()
  model.train()
  with torch.no_grad():
    run_batch(model)
    for bn in norms:
      bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.5, 2))
      bn.running_mean.add_(
          0.1 * bn.running_var.sqrt() * torch.randn_like(bn.running_mean))
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_(0.0, 0.2)
  model.eval()
