"""Test-wide setup: 8 host devices so sharding code runs as on a pod slice.

XLA reads XLA_FLAGS once, when jax first initialises its backend, so this
must run before any test module imports jax.
"""
import os

os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
    os.environ.get('XLA_FLAGS', ''),
    '--xla_force_host_platform_device_count=8']))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The test environment has jax[tpu] for the AOT tests; without this, JAX
# would try (and loudly fail) to open a TPU here (vidjax/platform.py).
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
