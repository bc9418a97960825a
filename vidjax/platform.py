"""Platform set-up that must happen before JAX initialises its backends.

`vidjax.cli.run` calls `start_up` first thing, for every command line.

With `jax[tpu]` installed (the test and TPU environments have it, for the
AOT tool), JAX on a machine without a TPU still loads libtpu, which prints
a screen of warnings and a 'Source Location Trace' at start. Where no TPU
is attached, vidjax therefore asks JAX for the CPU only, unless the user
chose platforms (JAX_PLATFORMS) or a GPU plugin is installed. The AOT tool
loads libtpu explicitly for its topologies (vidjax/tools/aot/topology.py).

JAX reads JAX_PLATFORMS when it is imported and XLA reads XLA_FLAGS when
the first backend starts, so both work as long as no backend has started:
a command line may import jax before `start_up`, but must not touch a
device.
"""
import contextlib
import glob
import importlib.util
import os
import sys
import tempfile

# The XLA:CPU flags that train fastest, measured (benchmarks/README.md):
# YNNPACK runs the dots (1x1x1 convs) and reductions (BN statistics), XLA's
# Eigen path the other convs. vidjax's training step on 2 cores:
#   S3D 2x16x224²:    3974 ms with XLA's defaults, 1882-2034 ms with these
#                     ("S3D against torchvision", settings default and ynn,
#                     2026-11-24; its vidjax column agrees with vidjax run
#                     alone);
#   TSM-R50 2x8x224²: 3416 ms -> 2797 ms ("TSM-R50 against PyTorch",
#                     2026-12-03);
#   the demo's quarter-width S3D-G: the same, 273 against 267-276 ms
#                     ("Flags for the demo").
# Inference is 4-17% slower with them (S3D 583 -> 605-620 ms, TSM-R50
# 716 -> 841 ms) and the one-frame stream step 5% (54.4 -> 57.4 ms), so
# only the trainer's command line (vidjax.main) asks for them.
CPU_TRAINING_XLA_FLAGS = '--xla_cpu_experimental_ynn_fusion_type=dot,reduce'


@contextlib.contextmanager
def captured_stderr():
  """Redirects fd 2 (what C++ prints: libtpu's logs, the TFLite
  converter's MLIR diagnostics) to a file; yields [its text]."""
  sys.stderr.flush()
  saved = os.dup(2)
  out = []
  with tempfile.TemporaryFile() as tmp:
    os.dup2(tmp.fileno(), 2)
    try:
      yield out
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      tmp.seek(0)
      out.append(tmp.read().decode(errors='replace'))


def tpu_attached() -> bool:
  """TPU VMs expose their chips as /dev/accel* (v2-v4) or /dev/vfio (v5+)."""
  return bool(glob.glob('/dev/accel*') or glob.glob('/dev/vfio/[0-9]*'))


def _gpu_plugin() -> bool:
  return any(importlib.util.find_spec(name) for name in
             ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm_plugin'))


def _chosen_platforms() -> str | None:
  """JAX_PLATFORMS, or jax's own setting where jax is already imported."""
  if 'JAX_PLATFORMS' in os.environ:
    return os.environ['JAX_PLATFORMS']
  if 'jax' in sys.modules:
    return sys.modules['jax'].config.jax_platforms or None
  return None


def prefer_cpu_without_accelerator():
  """JAX_PLATFORMS=cpu where libtpu is installed but no TPU is attached."""
  if _chosen_platforms() is not None or tpu_attached() or _gpu_plugin():
    return
  if importlib.util.find_spec('libtpu') is not None:
    os.environ['JAX_PLATFORMS'] = 'cpu'
    if 'jax' in sys.modules:  # It read the environment when imported.
      sys.modules['jax'].config.update('jax_platforms', 'cpu')


def runs_on_cpu() -> bool:
  """Whether JAX will run on the CPU alone (chosen, or no accelerator)."""
  chosen = _chosen_platforms()
  if chosen is not None:
    return chosen.strip().lower() == 'cpu'
  return not (tpu_attached() or _gpu_plugin())


def quiet_tensorflow():
  """Before TensorFlow loads (the data pipeline imports it).

  Its oneDNN banner and C++ info logs would bury the one-line errors and
  the tools' reports. TF only decodes JPEGs here, so its oneDNN graph
  rewrites are irrelevant.
  """
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')


def use_cpu_xla_flags(xla_flags: str) -> bool:
  """Sets XLA_FLAGS=`xla_flags` on a CPU run where the user set none.

  A user's XLA_FLAGS, even an empty one, is left alone. Returns whether
  the flags were set.
  """
  if 'XLA_FLAGS' in os.environ or not runs_on_cpu():
    return False
  os.environ['XLA_FLAGS'] = xla_flags
  return True


def start_up(cpu_xla_flags: str | None = None) -> bool:
  """Everything above, in order; returns whether XLA_FLAGS was set."""
  quiet_tensorflow()
  prefer_cpu_without_accelerator()
  return bool(cpu_xla_flags) and use_cpu_xla_flags(cpu_xla_flags)
