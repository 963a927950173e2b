#!/usr/bin/env bash
# Run the whole test suite in the project's own virtual environment (created on first use).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh tests/numerics -x`.
source "$(dirname "$0")/_env.sh"
# Two workers on a 2-core machine; one intra-op thread each avoids oversubscription.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# Type-check the package first (STYLE.md: mypy clean), unless only some tests were asked for.
if [ "$#" -eq 0 ]; then
    "$PY" -m mypy --no-error-summary || { echo "[fxquant] mypy found type errors" >&2; exit 1; }
fi
exec "$PY" -m pytest -n "${FXQUANT_TEST_WORKERS:-2}" -q "$@"
