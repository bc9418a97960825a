"""ResNet checkpoints (torchvision, official TSM, mmaction2) → vidjax TSN/TSM.

Three layouts, recognised from the keys (after `read_state_dict` has
unnested 'state_dict' and stripped DataParallel's 'module.'):

  torchvision  conv1.weight, bn1.*, layer1.0.conv1.weight, ...,
               layer1.0.downsample.{0,1}.*, fc.* (ImageNet: 1000 classes).
  official     mit-han-lab/temporal-shift-module's TSN wrapper:
               base_model.conv1.weight, ..., new_fc.* (or base_model.fc.*
               when trained with dropout 0, which keeps torchvision's fc).
  mmaction2    ResNetTSM + TSMHead (mmcv ConvModules): backbone.conv1.conv.*,
               backbone.conv1.bn.*, backbone.layer1.0.conv1.{conv,bn}.*,
               backbone.layer1.0.downsample.{conv,bn}.*, cls_head.fc_cls.*.

Wrappers seen in the keys set the model's structure:
  * `.net` after a block's conv1 (official `layer1.0.conv1.net.weight`,
    mmaction2 `layer1.0.conv1.conv.net.weight`): TemporalShift around conv1,
    placement 'blockres' → `placement='residual'`. The shifted blocks must be
    the official ones, `resnet.shifted_blocks(depth)` (every block; every
    second block of each stage for ResNet-101).
  * `.net` after the block index (`layer1.0.net.conv1.weight`): the whole
    block wrapped, placement 'block' → `placement='in_place'`; officially
    every block.
  * `layer2.net.` (the stage wrapped): TemporalPool → `temporal_pool=True`.
The shifted fraction and the segment count are not in a checkpoint: the
model keeps its defaults (1/8 each way, 8 segments). Nor is the direction:
a shifted checkpoint converts into `tsm_online_r*` as well as `tsm_r*`.

Depth and block kind come from the blocks per stage and the presence of
conv3, the class count from the classifier, the width from the stem.
Layouts: conv weights [c_out, c_in, kh, kw] → [1, kh, kw, c_in, c_out]; BN
weight/bias/running_mean/running_var → scale/bias (params) and mean/var
(batch_stats); the fc's [classes, features] → a Dense [features, classes].
BN step counters (`num_batches_tracked`) of the mapped BN layers carry no
weights and are ignored; any other tensor left over is an error.
"""
import dataclasses
import re
from typing import Any, Iterator, Mapping

import flax.linen as nn

from vidjax.convert import mapping
from vidjax.errors import VidjaxError
from vidjax.models import complexity
from vidjax.models import create_model
from vidjax.models import registry
from vidjax.models import resnet

FAMILY = 'resnet'
_BN_TENSORS = (('weight', 'params', 'scale'), ('bias', 'params', 'bias'),
               ('running_mean', 'batch_stats', 'mean'),
               ('running_var', 'batch_stats', 'var'))
_BN_COUNTER = 'num_batches_tracked'
# Parameter shapes do not depend on the input size; this is cheap to trace.
_PROBE_SIZE = 32
# A block's tensors: layer<stage>.[net.]<block>.[net.]<rest>; the first
# `net.` is TemporalPool around the stage, the second TemporalShift around
# the whole block (placement 'block').
_BLOCK_KEY = re.compile(r'layer(?P<stage>[1-4])\.(?P<pool>net\.)?'
                        r'(?P<block>\d+)\.(?P<wrapped>net\.)?(?P<rest>.+)')
_PLACEMENT_NAMES = {'residual': "'blockres'", 'in_place': "'block'"}


def model_names() -> list[str]:
  """The registered models this converter fills: the ResNet family."""
  return [name for name in registry.list_models()
          if registry.get_spec(name).family == FAMILY]


@dataclasses.dataclass(frozen=True)
class Layout:
  """How one code base names a ResNet's tensors.

  Attributes:
    name: for messages, e.g. 'official TSM'.
    prefix: of every backbone key.
    heads: candidate classifier modules (full keys without '.weight'); the
      first one present is the head.
    conv_module: mmcv ConvModule naming: convI.conv / convI.bn instead of
      torchvision's convI / bnI.
  """
  name: str
  prefix: str
  heads: tuple[str, ...]
  conv_module: bool = False

  def stem(self) -> tuple[str, str]:
    """(conv, bn) module names of the stem."""
    if self.conv_module:
      return f'{self.prefix}conv1.conv', f'{self.prefix}conv1.bn'
    return f'{self.prefix}conv1', f'{self.prefix}bn1'

  def block_conv(self, base: str, index: int, shifted: bool) -> str:
    """Conv `index` (1-based) of the block whose keys start with `base`."""
    conv = f'{base}conv{index}.conv' if self.conv_module else (
        f'{base}conv{index}')
    return conv + '.net' if shifted else conv

  def block_bn(self, base: str, index: int) -> str:
    return f'{base}conv{index}.bn' if self.conv_module else f'{base}bn{index}'

  def downsample(self, base: str) -> tuple[str, str]:
    if self.conv_module:
      return f'{base}downsample.conv', f'{base}downsample.bn'
    return f'{base}downsample.0', f'{base}downsample.1'

  def residual_shift_prefix(self) -> str:
    """How a block's keys start after `base` when conv1 is shift-wrapped."""
    return 'conv1.conv.net.' if self.conv_module else 'conv1.net.'


TORCHVISION = Layout('torchvision ResNet', '', ('fc',))
OFFICIAL = Layout('official TSM', 'base_model.', ('new_fc', 'base_model.fc'))
MMACTION2 = Layout('mmaction2 TSM', 'backbone.', ('cls_head.fc_cls',),
                   conv_module=True)


def _first_keys(state: Mapping[str, Any], count: int = 5) -> str:
  return ', '.join(list(state)[:count]) or 'none'


def detect_layout(state: Mapping[str, Any]) -> Layout:
  """The layout of a ResNet state dict, or a VidjaxError for other models."""
  keys = list(state)
  if any(k.startswith(('backbone.', 'cls_head.')) for k in keys):
    return MMACTION2
  if any(k.startswith(('base_model.', 'new_fc.')) for k in keys):
    return OFFICIAL
  if 'conv1.weight' in state and any(k.startswith('layer1.') for k in keys):
    return TORCHVISION
  raise VidjaxError(
      'not a ResNet checkpoint: want the keys of a torchvision ResNet '
      '(conv1.weight, layer1.0.conv1.weight, fc.weight), the official TSM '
      '(base_model.conv1.weight, new_fc.weight) or mmaction2 '
      f'(backbone.conv1.conv.weight, cls_head.fc_cls.weight); got '
      f'{len(keys)} tensors starting {_first_keys(state)}')


@dataclasses.dataclass(frozen=True)
class Structure:
  """What the keys say about the network.

  Attributes:
    layout: the checkpoint's layout.
    depth: 18, 34, 50 or 101.
    width: the stem's channels (torchvision: 64).
    num_classes: the classifier's outputs.
    head: the classifier module's key prefix.
    placement: 'residual' or 'in_place' for a TSM; None for a TSN.
    shifted: (stage, block) of every shift-wrapped block (0-based).
    temporal_pool: layer2 wrapped in TemporalPool.
  """
  layout: Layout
  depth: int
  width: int
  num_classes: int
  head: str
  placement: str | None
  shifted: frozenset[tuple[int, int]]
  temporal_pool: bool


def _block_names(blocks) -> str:
  return ', '.join(f'layer{s + 1}.{b}' for s, b in sorted(blocks)) or 'none'


def _depth_table() -> str:
  return '; '.join(f'ResNet-{d}: {kind} blocks {counts}'
                   for d, (kind, counts) in resnet.DEPTHS.items())


def read_structure(state: Mapping[str, Any]) -> Structure:
  """Reads depth, width, classes, shift placement and pooling off the keys.

  Raises:
    VidjaxError: for a checkpoint that is not a 2D ResNet of a depth vidjax
      builds, or whose shifts follow no official placement.
  """
  layout = detect_layout(state)
  where = f'{layout.name} checkpoint'
  stem_conv, _ = layout.stem()
  stem_key = f'{stem_conv}.weight'
  if stem_key not in state:
    raise VidjaxError(f'not a {layout.name} state dict: it has no {stem_key} '
                      f'(first keys: {_first_keys(state)})')
  stem_shape = tuple(state[stem_key].shape)
  if len(stem_shape) != 4:
    raise VidjaxError(
        f'{where}: {stem_key} has shape {list(stem_shape)}; a 2D ResNet '
        '(TSN/TSM) has a 4-D stem kernel [c_out, c_in, kh, kw] (5-D: a 3D '
        'ResNet such as I3D or SlowOnly, another model family)')

  counts = {}
  wrapped, residual, pooled = set(), set(), False
  bottleneck = False
  shift_prefix = layout.residual_shift_prefix()
  for key in state:
    if not key.startswith(layout.prefix):
      continue
    match = _BLOCK_KEY.fullmatch(key[len(layout.prefix):])
    if not match:
      continue
    stage, block = int(match['stage']) - 1, int(match['block'])
    counts[stage] = max(counts.get(stage, 0), block + 1)
    pooled |= bool(match['pool']) and stage == 1
    if match['wrapped']:
      wrapped.add((stage, block))
    if match['rest'].startswith(shift_prefix):
      residual.add((stage, block))
    bottleneck |= match['rest'].startswith('conv3.')
  if sorted(counts) != [0, 1, 2, 3]:
    raise VidjaxError(
        f'{where} does not hold the four stages of a ResNet (layer1..layer4 '
        f'under {layout.prefix or "the top level"!r}); stages found: '
        f'{", ".join(f"layer{s + 1}" for s in sorted(counts)) or "none"}')
  kind = 'bottleneck' if bottleneck else 'basic'
  blocks = tuple(counts[s] for s in range(4))
  depths = {(k, tuple(c)): d for d, (k, c) in resnet.DEPTHS.items()}
  if (kind, blocks) not in depths:
    raise VidjaxError(
        f'{where} is a ResNet of {kind} blocks {blocks} per stage, which '
        f'vidjax does not build ({_depth_table()})')
  depth = depths[kind, blocks]

  if wrapped and residual:
    raise VidjaxError(
        f'{where} mixes shift placements: blocks {_block_names(wrapped)} are '
        f"wrapped whole ('block'), blocks {_block_names(residual)} at conv1 "
        "('blockres')")
  placement = 'in_place' if wrapped else 'residual' if residual else None
  shifted = frozenset(wrapped or residual)
  if placement is not None:
    official = set(resnet.shifted_blocks(depth, placement))
    if shifted != official:
      raise VidjaxError(
          f'{where} does not shift the blocks that the official '
          f'{_PLACEMENT_NAMES[placement]} TSM of a ResNet-{depth} (and '
          f'vidjax\'s) shifts: shifted but should not be: '
          f'{_block_names(shifted - official)}; should be shifted but are '
          f'not: {_block_names(official - shifted)}')

  head = next((h for h in layout.heads if f'{h}.weight' in state), None)
  if head is None:
    raise VidjaxError(
        f'{where} has no classifier: none of '
        f'{", ".join(h + ".weight" for h in layout.heads)} '
        f'(first keys: {_first_keys(state)})')
  num_classes = mapping.classifier_size(state, f'{head}.weight', 2,
                                        layout.name)
  return Structure(layout, depth, int(stem_shape[0]), num_classes, head,
                   placement, shifted, pooled)


def _check_model(structure: Structure, name: str, model: resnet.TSM):
  """The checkpoint fits model `name` (depth, TSN vs TSM), else an error."""
  where = f'{structure.layout.name} checkpoint'
  family = name.rsplit('_r', 1)[0]
  if structure.depth != model.depth:
    raise VidjaxError(
        f'{where} is a ResNet-{structure.depth}, model {name} is a '
        f'ResNet-{model.depth}; convert it as {family}_r{structure.depth}')
  if structure.placement is not None and model.shift == 'none':
    raise VidjaxError(
        f'{where} is a TSM (temporal shift wrappers in '
        f'{len(structure.shifted)} blocks, placement '
        f'{_PLACEMENT_NAMES[structure.placement]}), model {name} is a TSN '
        f'without shifts; convert it as tsm_r{structure.depth} (or '
        f'tsm_online_r{structure.depth})')
  if (structure.placement is None and model.shift != 'none' and
      structure.layout is not TORCHVISION):
    # torchvision's ImageNet weights initialise any of the family; a video
    # checkpoint trained without shifts would predict differently with them.
    raise VidjaxError(
        f'{where} is a TSN (no temporal shift wrappers), model {name} '
        f'shifts; convert it as tsn_r{structure.depth} (its variables also '
        f'initialise {name}: the parameters are the same)')


def _conv_kernel(weight):
  if weight.ndim != 4:
    raise ValueError(f'want a 4-D conv weight, got {weight.shape}')
  return weight.transpose(2, 3, 1, 0)[None]


def _dense_kernel(weight):
  if weight.ndim != 2:
    raise ValueError(f'want a 2-D linear weight, got {weight.shape}')
  return weight.T


def _conv_bn(conv: str, bn: str, target: tuple[str, ...], conv_name: str,
             bn_name: str) -> Iterator[mapping.Rule]:
  yield mapping.Rule(f'{conv}.weight', ('params', *target, conv_name,
                                        'kernel'), _conv_kernel)
  for torch_name, collection, flax_name in _BN_TENSORS:
    yield mapping.Rule(f'{bn}.{torch_name}',
                       (collection, *target, bn_name, flax_name))


def rules(structure: Structure, targets: Mapping[mapping.Path, Any]
          ) -> list[mapping.Rule]:
  """Every tensor's vidjax destination, for a model with `targets`."""
  layout = structure.layout
  out = list(_conv_bn(*layout.stem(), (), 'conv1', 'bn1'))
  kind, counts = resnet.DEPTHS[structure.depth]
  convs = 3 if kind == 'bottleneck' else 2
  for s, count in enumerate(counts):
    pool = 'net.' if s == 1 and structure.temporal_pool else ''
    for b in range(count):
      shifted = (s, b) in structure.shifted
      wrapped = shifted and structure.placement == 'in_place'
      base = f'{layout.prefix}layer{s + 1}.{pool}{b}.' + (
          'net.' if wrapped else '')
      block = f'layer{s + 1}/block{b}'
      for i in range(1, convs + 1):
        conv = layout.block_conv(
            base, i, shifted and structure.placement == 'residual' and i == 1)
        out.extend(_conv_bn(conv, layout.block_bn(base, i), (block,),
                            f'conv{i}', f'bn{i}'))
      # vidjax's model decides where torchvision has a downsample; a
      # checkpoint disagreeing shows up as missing or unexpected tensors.
      if ('params', block, 'downsample', 'conv', 'kernel') in targets:
        out.extend(_conv_bn(*layout.downsample(base), (block, 'downsample'),
                            'conv', 'bn'))
  out.append(mapping.Rule(f'{structure.head}.weight', ('params', 'fc',
                                                       'kernel'),
                          _dense_kernel))
  out.append(mapping.Rule(f'{structure.head}.bias', ('params', 'fc', 'bias')))
  return out


def _bn_counters(rule_list: list[mapping.Rule]) -> set[str]:
  """The step counters of the BN layers the rules read."""
  return {r.source.rsplit('.', 1)[0] + f'.{_BN_COUNTER}' for r in rule_list
          if r.source.endswith('.running_mean')}


def convert(state_dict: Mapping[str, Any], name: str
            ) -> tuple[nn.Module, dict]:
  """(model, {'params', 'batch_stats'}) of ResNet-family model `name`.

  Args:
    state_dict: a torchvision ResNet, official TSM or mmaction2 TSM state
      dict (after `read_state_dict`), as torch tensors or numpy arrays.
    name: a registered ResNet-family model (tsn_r50, tsm_r50,
      tsm_online_r50, ...). The returned model is `name` with the
      checkpoint's class count, width, shift placement and temporal pooling.

  Raises:
    VidjaxError: a checkpoint of another family, depth or kind (TSN/TSM)
      than `name`, or a tensor missing, left over or of the wrong shape.
  """
  structure = read_structure(state_dict)
  requested = create_model(name, num_classes=structure.num_classes)
  _check_model(structure, name, requested)
  overrides = {'width': structure.width,
               'temporal_pool': structure.temporal_pool}
  if structure.placement is not None:
    overrides['placement'] = structure.placement
  model = create_model(name, num_classes=structure.num_classes, **overrides)
  targets = mapping.flatten(complexity.abstract_variables(
      model, (1, model.num_segments, _PROBE_SIZE, _PROBE_SIZE, 3)))
  rule_list = rules(structure, targets)
  counters = _bn_counters(rule_list)
  filled = mapping.assign(
      state_dict, targets, rule_list, ignore=counters.__contains__,
      description=f'{structure.layout.name} checkpoint into {name}')
  return model, mapping.unflatten(filled)
