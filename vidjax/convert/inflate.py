"""ImageNet GoogLeNet → any Inception video schedule, by inflation.

Xie et al. (S3D) bootstrap every model of their study from ImageNet
Inception-v1, as I3D did: each 2D kernel is inflated to the target conv's
shape so that, on a clip of one image repeated in time, the video model
computes the image model's activations at every frame.

  model, variables = vidjax.convert.inflate_googlenet(
      torchvision.models.googlenet(weights='DEFAULT').state_dict(), 's3d')

Rules, by the shape of each target kernel [kt, kh, kw, c_in, c_out]:
  - kt = 1 (2D units, 1×1×1 convs, the spatial half of a separable unit):
    the 2D kernel, copied.
  - kt > 1 (full 3D units): the 2D kernel repeated kt times and divided by
    kt (I3D's rule), so a temporally constant input sums back to the 2D
    response.
  - the temporal half of a separable unit has no 2D counterpart; it keeps its
    identity init (centre tap = identity, bias 0; conv.GOOGLENET), which
    passes the spatial half's non-negative output through unchanged.
  - BN scale/bias/mean/var: copied. The classifier: fc → Logits.
  - S3D-G gating has no 2D counterpart either; it keeps its random init, so a
    gated model does NOT compute googlenet at init: each gate scales its
    branch channels by σ(W·context), near 0.5 as W starts small (stddev
    0.01). The gates are named in a logged warning.

Exactness holds at interior frames only: temporal convs zero-pad the clip's
ends, so a full 3D unit's border frames see fewer than kt copies of the
image, and every 3×3×3 unit or max-pool above spreads that error one frame
inward (max-pools pad with -inf, which never wins a max, but a window that
reaches an inexact frame is inexact). Separable units add no error (their
temporal half reads only its centre tap), so S3D is exact but for frames
near its 3D stem's ends, and I2D, with no temporal kernels, at every frame.

Input: googlenet's ported weights expect pixels in [-1, 1]; torchvision's
pretrained `googlenet` converts ImageNet-normalised input to that range with
`transform_input=True`, which is not part of the state dict. Feed the
inflated model [-1, 1] video (as TF-slim's S3D expects), or apply the same
per-channel map first.
"""
import functools
from typing import Any, Iterator, Mapping

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidjax import convert as convert_lib
from vidjax.convert import mapping
from vidjax.errors import VidjaxError
from vidjax.layers import conv as conv_lib
from vidjax.models import create_model
from vidjax.models import inception

FC_WEIGHT = 'fc.weight'
# googlenet's units outside the Inception blocks → vidjax endpoints.
_STEM_UNITS = {'conv1': 'Conv2d_1a_7x7', 'conv2': 'Conv2d_2b_1x1',
               'conv3': 'Conv2d_2c_3x3'}
# torchvision's Inception modules in order: 3a, 3b, 4a–4e, 5a, 5b, which TF
# (and vidjax) call Mixed_3b, 3c, 4b–4f, 5b, 5c.
_BLOCKS = dict(zip(
    ('inception3a', 'inception3b', 'inception4a', 'inception4b',
     'inception4c', 'inception4d', 'inception4e', 'inception5a',
     'inception5b'), inception.INCEPTION_WIDTHS))
# Inside a block: torchvision's BasicConv2d → vidjax's unit. branch4.0 is
# the max-pool; torchvision's branch3 has 3×3 convs (not the paper's 5×5),
# as do TF-slim's Inception-v1 and S3D, so its kernels fit Branch_2.
_BRANCH_UNITS = {
    'branch1': 'Branch_0/Conv2d_0a_1x1',
    'branch2.0': 'Branch_1/Conv2d_0a_1x1',
    'branch2.1': 'Branch_1/Conv2d_0b_3x3',
    'branch3.0': 'Branch_2/Conv2d_0a_1x1',
    'branch3.1': 'Branch_2/Conv2d_0b_3x3',
    'branch4.1': 'Branch_3/Conv2d_0b_1x1',
}
_BN_TENSORS = (('weight', 'params', 'scale'), ('bias', 'params', 'bias'),
               ('running_mean', 'batch_stats', 'mean'),
               ('running_var', 'batch_stats', 'var'))
# The auxiliary classifiers (on 4a and 4d) only help ImageNet training and
# have no place in the backbone; torchvision's pretrained file has them.
_AUX_MODULES = ('aux1.', 'aux2.')
_STEP_COUNTER = '.num_batches_tracked'
# Parameter shapes do not depend on the input size; this one is cheap.
_SHAPE_PROBE = (1, 8, 32, 32, 3)


def inflate_kernel(weight: np.ndarray, temporal_size: int) -> np.ndarray:
  """torch [c_out, c_in, kh, kw] → vidjax [kt, kh, kw, c_in, c_out].

  Repeated `temporal_size` times and divided by it (a plain copy for 1), so
  that on a temporally constant input the 3-D response equals the 2-D one.
  """
  if weight.ndim != 4:
    raise ValueError(f'want a 4-D conv weight, got {weight.shape}')
  kernel = weight.transpose(2, 3, 1, 0)[None]
  return np.repeat(kernel, temporal_size, axis=0) / temporal_size


def _fc_kernel(weight: np.ndarray) -> np.ndarray:
  if weight.ndim != 2:
    raise ValueError(f'want a 2-D linear weight, got {weight.shape}')
  return weight.T


def _unit_rules(source: str, target: tuple[str, ...],
                targets: Mapping[mapping.Path, Any]
                ) -> Iterator[mapping.Rule]:
  """BasicConv2d `source` → the conv and BN of vidjax unit `target`."""
  kernel_path = ('params', *target, 'conv', 'kernel')
  # A path the model lacks gets a 1-frame transform; `assign` reports it.
  kt = targets[kernel_path].shape[0] if kernel_path in targets else 1
  yield mapping.Rule(f'{source}.conv.weight', kernel_path,
                     functools.partial(inflate_kernel, temporal_size=kt))
  for torch_name, collection, flax_name in _BN_TENSORS:
    yield mapping.Rule(f'{source}.bn.{torch_name}',
                       (collection, *target, 'bn', flax_name))


def rules(targets: Mapping[mapping.Path, Any],
          with_classifier: bool = True) -> list[mapping.Rule]:
  """Every googlenet backbone tensor's destination in `targets`.

  Args:
    targets: the vidjax model's variables by path (shapes only needed); the
      kernels' temporal sizes choose each inflation.
    with_classifier: also map fc → Logits.
  """
  out = []
  for source, name in _STEM_UNITS.items():
    out.extend(_unit_rules(source, (name,), targets))
  for block, name in _BLOCKS.items():
    for branch, unit in _BRANCH_UNITS.items():
      out.extend(_unit_rules(f'{block}.{branch}', (name, unit), targets))
  if with_classifier:
    out.append(mapping.Rule(FC_WEIGHT, ('params', 'Logits', 'kernel'),
                            _fc_kernel))
    out.append(mapping.Rule('fc.bias', ('params', 'Logits', 'bias')))
  return out


def _is_temporal_half(path: mapping.Path) -> bool:
  return 'temporal' in path or 'temporal_bn' in path


def _is_gating(path: mapping.Path) -> bool:
  return any(part.endswith('gating') for part in path)


def _names(paths) -> str:
  return ', '.join('/'.join(path[1:]) for path in paths)


def inflate_googlenet(source: Any, model_name: str = 'i3d', *,
                      num_classes: int | None = None,
                      rng: jax.Array | None = None,
                      **overrides: Any) -> tuple[nn.Module, dict]:
  """A vidjax Inception video model bootstrapped from ImageNet googlenet.

  Args:
    source: torchvision `googlenet` state dict (torch tensors or numpy
      arrays; with or without the aux classifiers, which are skipped) or the
      path of a file `torch.save` wrote.
    model_name: any registered Inception model (i2d, i3d, s3d, s3dg,
      bottom/top-heavy variants, fast_s3d, ...).
    num_classes: logits size. None or fc's size (1000 for ImageNet): fc
      becomes the classifier. Any other size: a fresh classifier (fc is
      dropped), as for fine-tuning on a video dataset.
    rng: initialises what googlenet cannot provide (gates, a fresh
      classifier); defaults to `jax.random.key(0)`.
    **overrides: further `create_model` options (e.g. `schedule`, `stem`,
      `dropout_rate`, `bn_momentum`), but not `numerics`: an inflated model
      must pad, pool and normalise like googlenet (conv.GOOGLENET).

  Returns:
    (model, {'params', 'batch_stats'}) with numpy float32 variables. On a
    clip of one repeated image the model reproduces googlenet's activations
    (module doc for which frames); gated models are the exception.

  Raises:
    VidjaxError: unreadable source, bad options, or a state dict whose
      tensors do not fill the model one for one (missing, unexpected and
      misshapen tensors are all named).
  """
  if 'numerics' in overrides:
    raise VidjaxError('inflate_googlenet fixes numerics to conv.GOOGLENET '
                      "(googlenet's padding, pooling and BN); drop the "
                      'numerics option')
  state = convert_lib.read_state_dict(source)
  fc_classes = mapping.classifier_size(state, FC_WEIGHT, 2,
                                        'torchvision googlenet')
  num_classes = fc_classes if num_classes is None else num_classes
  keep_fc = num_classes == fc_classes
  model = create_model(model_name, num_classes=num_classes,
                       numerics=conv_lib.GOOGLENET, **overrides)
  if not isinstance(model, inception.InceptionVideoNet):
    raise VidjaxError(f'cannot inflate googlenet into {model_name!r}: it is '
                      'not an Inception video model')

  def init(key):
    return nn.unbox(model.init(key, jnp.zeros(_SHAPE_PROBE)))

  targets = mapping.flatten(jax.eval_shape(init, jax.random.key(0)))
  # Variables googlenet has no tensor for keep their initial values.
  temporal = [p for p in targets if _is_temporal_half(p)]
  gating = [p for p in targets if _is_gating(p)]
  head = [] if keep_fc else [p for p in targets if p[1] == 'Logits']
  kept = set(temporal) | set(gating) | set(head)

  def ignore(key: str) -> bool:
    return (key.startswith(_AUX_MODULES) or key.endswith(_STEP_COUNTER) or
            (not keep_fc and key.startswith('fc.')))

  filled = mapping.assign(
      state, {p: v for p, v in targets.items() if p not in kept},
      rules(targets, with_classifier=keep_fc), ignore=ignore,
      description=f'googlenet checkpoint for {model_name!r}')

  if kept:
    # Only the kept variables leave the jitted init, so XLA drops the random
    # kernels and the probe's forward pass it would otherwise compute.
    initial = jax.jit(lambda key: {
        p: v for p, v in mapping.flatten(init(key)).items() if p in kept})(
            jax.random.key(0) if rng is None else rng)
    filled.update({p: np.asarray(v, np.float32) for p, v in initial.items()})
  if temporal:
    logging.info('inflate_googlenet(%s): %d temporal-half variables keep '
                 'their identity init', model_name, len(temporal))
  if gating:
    logging.warning(
        'inflate_googlenet(%s): googlenet has no gates; %d gating variables '
        'keep their random init, so the model does not reproduce googlenet '
        'at init: %s', model_name, len(gating), _names(gating))
  if head:
    logging.info('inflate_googlenet(%s): fc has %d classes, not %d; fresh '
                 'classifier %s', model_name, fc_classes, num_classes,
                 _names(head))
  return model, mapping.unflatten(filled)
