"""Platform kernels: lowerings that replace a plain op where a platform
measured faster, each beside the plain form it replaces.

  conv.py    3-D convs by kernel shape (folded 2-D convs, matmuls, polyphase
             strided temporal convs, im2col) | lax.conv_general_dilated
  pool.py    separable max-pools with int8 winners | reduce_window
  norm.py    BN+ReLU with a hand-written gradient | autodiff through BN
  matmul.py  bf16 Dense products accumulated in float32 | lax.dot_general

Every op takes `kernels`: 'custom' (the hand-written forms), 'plain' (the
plain XLA ops) or 'auto', which `selection.DEFAULT_KERNELS`, the one table,
resolves by platform. The ops are local: no model, layer or mesh knowledge
(vidjax/layers/ wires the halos of time-sharded steps around them).
"""
from vidjax.kernels.selection import CHOICES
from vidjax.kernels.selection import DEFAULT_KERNELS
from vidjax.kernels.selection import default_kernels
from vidjax.kernels.selection import FORMER_NAMES
from vidjax.kernels.selection import KERNEL_SETS
from vidjax.kernels.selection import resolve
from vidjax.kernels.selection import UnknownKernelsError
