"""Test-wide setup: 8 host devices so sharding code runs as on a pod slice.

XLA reads XLA_FLAGS once, when jax first initialises its backend, so this
must run before any test module imports jax.
"""
import atexit
import os
import shutil
import tempfile

# Backend optimisation off: the suite compiles hundreds of tiny programs and
# runs each a few times, so LLVM's passes cost far more than they save
# (the whole suite: 34 -> 18.5 min on 2 cores, 2026-12-03).
# The HLO passes, the partitioner and the collectives the tests read are
# unchanged; only the CPU code generated from them is less optimised.
os.environ['XLA_FLAGS'] = ' '.join(filter(None, [
    os.environ.get('XLA_FLAGS', ''),
    '--xla_force_host_platform_device_count=8',
    '--xla_backend_optimization_level=0']))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# The test environment has jax[tpu] for the AOT tests; without this, JAX
# would try (and loudly fail) to open a TPU here (vidjax/platform.py).
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')

# Triton's C extension (which transformers' models pull in through torch)
# segfaults on load when TensorFlow was loaded first: seen with torch
# 2.14.1, TimesformerForVideoClassification after the data pipeline, in one
# xdist worker. Loaded first, both work.
try:
  import triton.runtime  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
except ImportError:
  pass

# One persistent compilation cache for the whole run: the tests train the
# same tiny programs many times (a run, its preempted twin, the resume, the
# subprocesses of the multi-host tests), and compiling them is most of the
# suite's time. Set in the environment, so pytest-xdist's workers and the
# tests' subprocesses share it. A fresh directory per run: the suite's time
# budget is for a cold start, and nothing is left behind.
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='vidjax-tests-jit-')
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.5')

# Property tests (hypothesis): the same examples on every run, so a red CI
# can be rerun and seen again; `pytest --hypothesis-profile=explore` draws
# new ones to look for cases nobody thought of.
try:
  import hypothesis  # pylint: disable=g-import-not-at-top
  hypothesis.settings.register_profile('default', derandomize=True,
                                       database=None)
  hypothesis.settings.register_profile('explore', max_examples=500)
  hypothesis.settings.load_profile('default')
except ImportError:
  pass


# The slowest files first. `run.sh test` hands whole files to two workers
# (pytest-xdist's loadfile) in collection order, which is alphabetical: the
# suite's slowest files (tests/train, tests/parallel) came last and ran
# alone on one worker while the other had nothing left to do. Started
# first, they run beside the many short files instead. Only the order
# changes; every worker sorts the same way, as xdist requires.
SLOW_FILES_FIRST = (
    'tests/train/test_trainer.py',
    'tests/parallel/test_multihost.py',
    'tests/parallel/test_sharded_step.py',
    'tests/parallel/test_sharded_float64.py',
    'tests/train/test_silent_results.py',
    'tests/tools/test_aot.py',
    'tests/models/test_inception.py',
    'tests/convert/test_torchvision_s3d.py',
    'tests/test_main.py',
    'tests/parallel/test_tsm_sharded.py',
    'tests/kernels/test_unchanged.py',
    'tests/convert/test_googlenet_inflation.py',
)


def pytest_collection_modifyitems(config, items):
  del config
  rank = {path: i for i, path in enumerate(SLOW_FILES_FIRST)}
  # A stable sort: the other files keep their order.
  items.sort(key=lambda item: rank.get(item.nodeid.split('::', 1)[0],
                                       len(rank)))
