# Sourced by scripts/test.sh and scripts/demo.sh: create (once) and update the project's
# virtual environment, installing fxquant with its dev extras. torch is pinned to the local
# CPU build by constraints-dev.txt; an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FXQUANT_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "[fxquant] creating virtual environment in $VENV" >&2
    python3 -m venv "$VENV"
fi
# Reinstall only when the dependency declarations changed since the last install.
STAMP="$VENV/.fxquant-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints-dev.txt" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[fxquant] installing fxquant[dev] (torch pinned by constraints-dev.txt)" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$PY" -m pip install --quiet --disable-pip-version-check -c "$ROOT/constraints-dev.txt" torch==2.13.0
    "$PY" -m pip install --quiet --disable-pip-version-check -c "$ROOT/constraints-dev.txt" -e "$ROOT[dev]"
    echo "$WANT" > "$STAMP"
fi
cd "$ROOT"
