"""Which kernel set runs: the one table, by platform.

Two sets lower the same maths. 'custom': the hand-written forms measured
fastest on XLA:CPU (folded 2-D convs, polyphase strided temporal convs,
im2col for convs narrower than their kernel, 1×1×1 convs as matmuls with
their own gradient, separable max-pools with int8 winners, BN+ReLU with a
hand-written gradient, bf16 Dense products accumulated in float32;
benchmarks/README.md). 'plain': the plain XLA ops they replace (3-D convs,
reduce_window, autodiff through BN, lax.dot_general). Parameters and values
are the same either way; only the lowered program differs. A model's
`kernels` option picks one, or 'auto': the platform's entry below.
"""
import jax

from vidjax.errors import VidjaxError

KERNEL_SETS = ('custom', 'plain')
CHOICES = ('auto',) + KERNEL_SETS
# Per platform, by what was measured. On TPU, from the AOT report of
# S3D-G's train step (docs/scale.md: v5e 4x4, bf16, 4 clips per chip), the
# custom forms need less HBM (11.40 against 14.05 GiB), fewer flops (1.45
# against 1.62 TFLOP) and fewer bytes (85.9 against 96.5 GB) than the plain
# ops, and the step is memory-bound by the roofline: so 'custom' there too.
# An estimate, not a TPU timing; `--config.model.kernels=plain` is one flag
# away. (The custom bf16 dot is lax.dot_general off the CPU: a TPU
# accumulates bf16 products in float32 anyway.) GPUs were not measured: the
# plain ops.
DEFAULT_KERNELS = {'cpu': 'custom', 'tpu': 'custom', 'gpu': 'plain'}
# The sets' names before they were named for what they are (the model
# option was `lowering`, and 'custom' read as 'cpu' even on a TPU).
FORMER_NAMES = {'cpu': 'custom', 'xla': 'plain'}


class UnknownKernelsError(VidjaxError, ValueError):
  """A `kernels` value that names no kernel set."""


def default_kernels(platform: str) -> str:
  """What 'auto' means on `platform` ('cpu', 'tpu', 'gpu', ...)."""
  return DEFAULT_KERNELS.get(platform, 'plain')


def resolve(kernels: str) -> str:
  """'custom' or 'plain' for a `kernels` choice; 'auto' by the platform."""
  if kernels not in CHOICES:
    hint = (f" ('{kernels}' is now called '{FORMER_NAMES[kernels]}')"
            if kernels in FORMER_NAMES else '')
    raise UnknownKernelsError(f'unknown kernels {kernels!r}; known: '
                              f'{", ".join(CHOICES)}{hint}')
  if kernels == 'auto':
    return default_kernels(jax.default_backend())
  return kernels
