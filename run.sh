#!/usr/bin/env bash
# One entry point for a fresh machine with only Python >= 3.11 and pip.
#
#   bash run.sh demo [main.py flags...]   set up, then train + evaluate configs/demo.py
#   bash run.sh test [pytest args...]     set up (with the PyTorch references), then run the tests
#   bash run.sh python ARGS...            run Python in the test environment (with
#                                         torch: benchmarks, parity checks)
#   bash run.sh tpu [main.py flags...]    on a TPU VM: set up (jax[tpu]), then
#                                         python -m vidjax.main with those flags
#   bash run.sh setup {demo|test|tpu}     only set up that environment (idempotent)
#
# Environments are cached under $VIDJAX_CACHE (default ~/.cache/vidjax), keyed by
# a hash of pyproject.toml's dependency lists, so every clone (and CI) reuses one
# environment instead of building ~8 GB per checkout. The package itself is not
# installed into the shared environment: this checkout is put on PYTHONPATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cmd="${1:-}"
[ $# -gt 0 ] && shift
setup_only=""
if [ "$cmd" = setup ]; then
  setup_only=1
  cmd="${1:-}"
  [ $# -gt 0 ] && shift
fi

case "$cmd" in
  demo) extras="" ;;
  # libtpu in the test environment: the AOT tests compile for TPU topologies.
  test|python) extras="test,torch,tfds_cli,tpu" ;;
  tpu) extras="tpu" ;;
  *) echo "usage: bash run.sh {demo|test|python|tpu|setup NAME} [args...]" >&2; exit 2 ;;
esac

python="${PYTHON:-python3}"
cache="${VIDJAX_CACHE:-$HOME/.cache/vidjax}"
reqs="$("$python" "$here/run_requirements.py" "$here/pyproject.toml" "$extras")"
key="$(printf '%s' "$reqs" | sha256sum | cut -c1-16)"
venv="$cache/venv-$key"

if [ ! -f "$venv/.ready" ]; then
  echo "vidjax: creating environment $venv (one-time; extras: ${extras:-none})" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  # shellcheck disable=SC2086
  printf '%s\n' "$reqs" > "$venv/requirements.txt"
  "$venv/bin/pip" install --quiet -r "$venv/requirements.txt"
  touch "$venv/.ready"
fi

[ -n "$setup_only" ] && exit 0

export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export TF_ENABLE_ONEDNN_OPTS="${TF_ENABLE_ONEDNN_OPTS:-0}"
cd "$here"
case "$cmd" in
  demo)
    exec "$venv/bin/python" -m vidjax.main --config=configs/demo.py --workdir="${VIDJAX_WORKDIR:-workdirs/demo}" "$@" ;;
  test)
    # Two workers, whole files each (module fixtures render data once): most
    # tests are bound by one thread (tracing, compiling, tf.data), so this
    # roughly halves the suite on a 2-core machine. VIDJAX_TEST_WORKERS=0
    # runs in-process.
    workers="${VIDJAX_TEST_WORKERS:-2}"
    if [ "$workers" = 0 ]; then
      exec "$venv/bin/python" -m pytest -q "$@"
    fi
    exec "$venv/bin/python" -m pytest -q -n "$workers" --dist loadfile "$@" ;;
  python)
    exec "$venv/bin/python" "$@" ;;
  tpu)
    exec "$venv/bin/python" -m vidjax.main "$@" ;;
esac
