"""torchvision's S3D (`torchvision.models.video.s3d`) → 's3d_torchvision'.

torchvision keeps the network as `features`, an `nn.Sequential` whose entries
run in the same order as vidjax's endpoints (stem, pools, Conv2d_2b/2c, the
nine Inception blocks), then `avgpool` and `classifier` = (Dropout, 1×1×1
Conv3d). So the state-dict names follow from vidjax's own block order:
entry i of `features` is the i-th layer of `_feature_layers()`, and inside
each layer the torchvision submodules map onto vidjax's STConv units:

  Conv3dNormActivation P     P.0 = conv, P.1 = BN       → conv, bn
  TemporalSeparableConv P    P.0 = spatial (conv, BN),  → conv, bn,
                             P.1 = temporal (conv, BN)    temporal, temporal_bn

Layouts: conv weights [c_out, c_in, kt, kh, kw] → [kt, kh, kw, c_in, c_out];
BN weight/bias/running_mean/running_var → scale/bias (params) and mean/var
(batch_stats); the classifier's [n, c, 1, 1, 1] conv → a Dense [c, n].
"""
from typing import Any, Iterator, Mapping

import flax.linen as nn
import numpy as np

from vidjax.convert import mapping
from vidjax.errors import VidjaxError
from vidjax.models import complexity
from vidjax.models import create_model
from vidjax.models import inception

MODEL_NAME = 's3d_torchvision'
CLASSIFIER_WEIGHT = 'classifier.1.weight'
# torchvision BN's state besides its four tensors: a step counter.
_IGNORED_SUFFIX = '.num_batches_tracked'
_BN_TENSORS = (('weight', 'params', 'scale'), ('bias', 'params', 'bias'),
               ('running_mean', 'batch_stats', 'mean'),
               ('running_var', 'batch_stats', 'var'))
# Inside an Inception block: torchvision submodule → (vidjax unit,
# separable?). branch3.0 is the max-pool, which has no weights.
_BLOCK_UNITS = {
    'branch0': ('Branch_0/Conv2d_0a_1x1', False),
    'branch1.0': ('Branch_1/Conv2d_0a_1x1', False),
    'branch1.1': ('Branch_1/Conv2d_0b_3x3', True),
    'branch2.0': ('Branch_2/Conv2d_0a_1x1', False),
    'branch2.1': ('Branch_2/Conv2d_0b_3x3', True),
    'branch3.1': ('Branch_3/Conv2d_0b_1x1', False),
}
# Any input that runs through vidjax's model does to read parameter shapes
# (they do not depend on the input size); this one is cheap to trace.
_SHAPE_PROBE = (1, 8, 32, 32, 3)


def _feature_layers() -> list[tuple[str, str]]:
  """(vidjax name, kind) of each entry of torchvision's `features`, in order.

  Kinds: 'sep' (separable unit), 'unit' (1×1×1 unit), 'pool', 'block'.
  """
  layers = [('Conv2d_1a_7x7', 'sep'), ('MaxPool_2a_3x3', 'pool'),
            ('Conv2d_2b_1x1', 'unit'), ('Conv2d_2c_3x3', 'sep')]
  for name in inception.INCEPTION_WIDTHS:
    if name in inception.POOLS_BEFORE:
      layers.append((inception.POOLS_BEFORE[name][0], 'pool'))
    layers.append((name, 'block'))
  return layers


def _conv_kernel(weight: np.ndarray) -> np.ndarray:
  if weight.ndim != 5:
    raise ValueError(f'want a 5-D conv weight, got {weight.shape}')
  return weight.transpose(2, 3, 4, 1, 0)


def _classifier_kernel(weight: np.ndarray) -> np.ndarray:
  if weight.ndim != 5 or weight.shape[2:] != (1, 1, 1):
    raise ValueError(f'want a 1×1×1 conv weight, got {weight.shape}')
  return weight[:, :, 0, 0, 0].T


def _conv_bn_rules(source: str, target: tuple[str, ...], conv: str = 'conv',
                   bn: str = 'bn') -> Iterator[mapping.Rule]:
  """Conv3dNormActivation `source` → vidjax's `conv` and `bn` at `target`."""
  yield mapping.Rule(f'{source}.0.weight', ('params', *target, conv,
                                            'kernel'), _conv_kernel)
  for torch_name, collection, flax_name in _BN_TENSORS:
    yield mapping.Rule(f'{source}.1.{torch_name}',
                       (collection, *target, bn, flax_name))


def _unit_rules(source: str, target: tuple[str, ...],
                separable: bool) -> Iterator[mapping.Rule]:
  if not separable:
    yield from _conv_bn_rules(source, target)
    return
  # TemporalSeparableConv: spatial half then temporal half, each with BN.
  yield from _conv_bn_rules(f'{source}.0', target)
  yield from _conv_bn_rules(f'{source}.1', target, 'temporal', 'temporal_bn')


def rules() -> list[mapping.Rule]:
  """Every torchvision S3D tensor's vidjax destination."""
  out = []
  for index, (name, kind) in enumerate(_feature_layers()):
    source = f'features.{index}'
    if kind in ('sep', 'unit'):
      out.extend(_unit_rules(source, (name,), separable=kind == 'sep'))
    elif kind == 'block':
      for sub, (unit, separable) in _BLOCK_UNITS.items():
        out.extend(_unit_rules(f'{source}.{sub}', (name, unit), separable))
  out.append(mapping.Rule(CLASSIFIER_WEIGHT, ('params', 'Logits', 'kernel'),
                          _classifier_kernel))
  out.append(mapping.Rule('classifier.1.bias', ('params', 'Logits', 'bias')))
  return out


def convert(state_dict: Mapping[str, Any]) -> tuple[nn.Module, dict]:
  """(model, {'params', 'batch_stats'}) equivalent to a torchvision S3D.

  Args:
    state_dict: `torchvision.models.video.s3d(...).state_dict()`, as torch
      tensors or numpy arrays.

  Raises:
    VidjaxError: if a tensor is missing, left over or of the wrong shape.
  """
  model = create_model(MODEL_NAME, num_classes=mapping.classifier_size(
      state_dict, CLASSIFIER_WEIGHT, 5, 'torchvision S3D'))
  targets = mapping.flatten(
      complexity.abstract_variables(model, _SHAPE_PROBE))
  filled = mapping.assign(
      state_dict, targets, rules(),
      ignore=lambda key: key.endswith(_IGNORED_SUFFIX),
      description='torchvision S3D checkpoint')
  return model, mapping.unflatten(filled)
