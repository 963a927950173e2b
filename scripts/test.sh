#!/usr/bin/env bash
# Run the whole test suite in the project's own virtual environment (created on first use).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/numerics -x`.
source "$(dirname "$0")/_env.sh"
# Two workers on a 2-core machine; one intra-op thread each avoids oversubscription.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PY" -m pytest -n "${FXQUANT_TEST_WORKERS:-2}" -q "$@"
