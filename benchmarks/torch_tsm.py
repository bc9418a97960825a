"""TSM in PyTorch as the official code builds it: the benchmarks' peer.

The official `make_temporal_shift` (mit-han-lab/temporal-shift-module,
ops/temporal_shift.py, place 'blockres') wraps conv1 of every block of a
torchvision ResNet in a module that shifts its input: on (N·T, C, H, W),
channels [0, C/8) take frame t + 1, [C/8, C/4) frame t − 1, zeros at the
clip's ends. ResNet-101 wraps every second block. The online form (the
official online_demo) keeps the first C/8 channels of the previous frame in
a buffer per block instead. The head is TSN's: average pool, dropout, fc,
mean of the logits over the T segments.
"""
from __future__ import annotations

import torch
import torchvision


class Shift(torch.nn.Module):
  """The official TemporalShift around `net` (offline, bi-directional)."""

  def __init__(self, net, segments, fold_div=8):
    super().__init__()
    self.net, self.segments, self.fold_div = net, segments, fold_div

  def forward(self, x):
    nt, c, h, w = x.shape
    x = x.view(nt // self.segments, self.segments, c, h, w)
    fold = c // self.fold_div
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold:2 * fold] = x[:, :-1, fold:2 * fold]
    out[:, :, 2 * fold:] = x[:, :, 2 * fold:]
    return self.net(out.view(nt, c, h, w))


class OnlineShift(torch.nn.Module):
  """online_demo's causal shift: a buffer of the previous frame's channels."""

  def __init__(self, net, fold_div=8):
    super().__init__()
    self.net, self.fold_div, self.buffer = net, fold_div, None

  def forward(self, x):
    fold = x.shape[1] // self.fold_div
    if self.buffer is None:
      self.buffer = torch.zeros_like(x[:, :fold])
    shifted = torch.cat([self.buffer, x[:, fold:]], dim=1)
    self.buffer = x[:, :fold]
    return self.net(shifted)


def _wrap_blocks(resnet, wrap):
  every = 2 if len(resnet.layer3) >= 23 else 1
  for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
    for i, block in enumerate(stage):
      if i % every == 0:
        block.conv1 = wrap(block.conv1)


class TSM(torch.nn.Module):
  """TSN-style TSM: input (N, T, 3, H, W); logits averaged over T."""

  def __init__(self, depth=50, num_classes=400, segments=8, online=False,
               dropout=0.5):
    super().__init__()
    self.segments = segments
    base = getattr(torchvision.models, f'resnet{depth}')()
    _wrap_blocks(base, (lambda net: OnlineShift(net)) if online else
                 (lambda net: Shift(net, segments)))
    features = base.fc.in_features
    base.fc = torch.nn.Dropout(dropout)
    self.base_model = base
    self.new_fc = torch.nn.Linear(features, num_classes)

  def forward(self, video):
    n, t = video.shape[:2]
    logits = self.new_fc(self.base_model(video.flatten(0, 1)))
    return logits.view(n, t, -1).mean(1)
