"""Platform set-up that must happen before JAX initialises its backends.

With `jax[tpu]` installed (the test and TPU environments have it, for the
AOT tool), JAX on a machine without a TPU still loads libtpu, which prints
a screen of warnings and a 'Source Location Trace' at start. Where no TPU
is attached, vidjax therefore asks JAX for the CPU only, unless the user
chose platforms (JAX_PLATFORMS) or a GPU plugin is installed. The AOT tool
loads libtpu explicitly for its topologies (vidjax/tools/aot.py).
"""
import glob
import importlib.util
import os


def tpu_attached() -> bool:
  """TPU VMs expose their chips as /dev/accel* (v2-v4) or /dev/vfio (v5+)."""
  return bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))


def _gpu_plugin() -> bool:
  return any(importlib.util.find_spec(name) for name in
             ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm_plugin'))


def prefer_cpu_without_accelerator():
  if 'JAX_PLATFORMS' in os.environ or tpu_attached() or _gpu_plugin():
    return
  if importlib.util.find_spec('libtpu') is not None:
    os.environ['JAX_PLATFORMS'] = 'cpu'
