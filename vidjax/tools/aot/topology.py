"""TPU chips and topologies: libtpu's compile-only devices of a TPU slice.

`load_topology('v5e:4x4')` asks libtpu for the devices of a slice that is
not attached, for compiling ahead of time; `CHIPS` holds each generation's
peak figures (Cloud TPU docs), which the report compares against.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import sys

import jax

from vidjax import platform
from vidjax.errors import VidjaxError

if not platform.tpu_attached():
  # libtpu locks /tmp/libtpu_lockfile so that one process owns the TPU; with
  # no TPU here there is nothing to own, and the lock would keep two AOT
  # compiles (or the tool and the tests) from running side by side. Read
  # when libtpu loads, at the first topology.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Chip:
  """Per-chip peak figures of a TPU generation."""
  name: str                 # 'v5e', as in topology names.
  device_kind: str          # jax Device.device_kind.
  peak_flops: float         # bf16 FLOP/s.
  hbm_bandwidth: float      # bytes/s.
  hbm_bytes: int


# Source: Cloud TPU docs, the system architecture page of each generation
# (cloud.google.com/tpu/docs/v4, v5e, v5p, v6e): peak bf16 compute, HBM
# capacity and bandwidth per chip. The docs write the capacities as "GiB"
# (v4) or "GB" (v5e, v5p, v6e); they are 16/32/95 GiB parts, and libtpu's
# own limit (in its out-of-memory message) is a little lower. v4 and v5p
# chips have two TensorCores run as one JAX device (megacore), so a device
# is a chip on every generation here.
CHIPS = {
    'v4': Chip('v4', 'TPU v4', 275e12, 1200e9, 32 * GiB),
    'v5e': Chip('v5e', 'TPU v5 lite', 197e12, 819e9, 16 * GiB),
    'v5p': Chip('v5p', 'TPU v5', 459e12, 2765e9, 95 * GiB),
    'v6e': Chip('v6e', 'TPU v6 lite', 918e12, 1638e9, 32 * GiB),
}
# Topologies this libtpu was seen to accept (jax 0.10.2); any AxB / AxBxC
# libtpu knows works.
EXAMPLE_TOPOLOGIES = ('v4:2x2x1', 'v4:2x2x2', 'v5e:1x1', 'v5e:2x2',
                      'v5e:2x4', 'v5e:4x4', 'v5p:2x2x1', 'v5p:2x2x2',
                      'v6e:1x1', 'v6e:2x2', 'v6e:4x4')


@dataclasses.dataclass
class Topology:
  name: str
  chip: Chip
  devices: list            # Compile-only jax Devices, one per chip.
  num_slices: int = 1


def _require_libtpu():
  if importlib.util.find_spec('libtpu') is None:
    raise VidjaxError(
        'the AOT tool compiles with libtpu, which is not installed: '
        f'pip install "jax[tpu]=={jax.__version__}"')


def _unknown(name: str) -> VidjaxError:
  return VidjaxError(
      f"libtpu does not know topology '{name}' (known: "
      f"{', '.join(EXAMPLE_TOPOLOGIES)}, ...: GENERATION:AxB or AxBxC in "
      'chips)')


def load_topology(name: str, num_slices: int = 1) -> Topology:
  """libtpu's compile-only devices of topology `name`, e.g. 'v5e:4x4'."""
  from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
  _require_libtpu()
  generation, _, layout = name.partition(':')
  kwargs = {}
  if generation == 'v4':
    kwargs['chip_config_name'] = 'megacore'  # One device per chip (MaxText).
  if num_slices > 1:
    kwargs['num_slices'] = num_slices
  dims = [int(d) for d in re.findall(r'\d+', layout.split('_')[0])] + [1]
  logs = []
  for attempt in range(2):
    with platform.captured_stderr() as log:
      try:
        devices = topologies.get_topology_desc(name, 'tpu', **kwargs).devices
        error = None
      except Exception as e:  # pylint: disable=broad-except
        devices, error = None, e
    logs.append(log[0])
    if error is None:
      break
    message = str(error)
    # libtpu's default host is 2x2x1 chips: a smaller slice (v5e:1x1) needs
    # its own host bounds.
    if attempt == 0 and 'chips_per_host_bounds' in message and dims[:-1]:
      kwargs['chips_per_host_bounds'] = tuple(
          min(d, h) for d, h in zip(dims[:3], (2, 2, 1)))
      continue
    if 'libtpu_lockfile' in message:
      raise VidjaxError(
          'another process holds libtpu (/tmp/libtpu_lockfile); without a '
          'TPU attached, set ALLOW_MULTIPLE_LIBTPU_LOAD=1') from error
    if 'INVALID_ARGUMENT' in message and ('topology' in message.lower()
                                          or 'TPU' in message):
      raise _unknown(name) from error
    sys.stderr.write(''.join(logs))
    raise VidjaxError(f'libtpu failed to describe topology {name!r}: '
                      f'{message}') from error
  kind = devices[0].device_kind
  chip = next((c for c in CHIPS.values() if c.device_kind == kind), None)
  if chip is None:
    raise VidjaxError(f'no chip figures for {kind} (topology {name!r}); '
                      f'vidjax knows {", ".join(CHIPS)} (CHIPS in '
                      'vidjax/tools/aot/topology.py)')
  return Topology(name=name, chip=chip, devices=list(devices),
                  num_slices=num_slices)

