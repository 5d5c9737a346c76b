#!/usr/bin/env bash
# Idempotent set-up: a venv in .venv with torch pinned to the CPU 2.13.0 wheel first, then the
# exact versions of requirements.lock (generated from pyproject.toml's ranges; the README says how
# to refresh it) under constraints.txt (so nothing can pull a CUDA torch), then albert-edge itself
# without dependencies. The lock holds the tflite, dev and sweep (Ray Tune, Optuna) extras; other
# ALBERT_EDGE_EXTRAS install from ranges.
# Re-running is fast: pip is skipped while pyproject.toml, the lock and constraints.txt are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${ALBERT_EDGE_EXTRAS:-tflite,dev,sweep}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for c in python3.11 python3.12 python3.13 python3; do
    if command -v "$c" >/dev/null && "$c" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then PY="$c"; break; fi
  done
fi
[ -n "$PY" ] || { echo "albert-edge needs Python >= 3.11" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.albert-edge-stamp"
want="$(cat pyproject.toml requirements.lock constraints.txt | sha256sum | cut -d' ' -f1)-$EXTRAS"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "$(grep '^torch==' constraints.txt)"
  .venv/bin/python -m pip install -q -c constraints.txt -r requirements.lock
  # the lock holds every dependency (and setuptools for the build): nothing is resolved here
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
  if [ "$EXTRAS" != "tflite,dev,sweep" ]; then .venv/bin/python -m pip install -q -c constraints.txt -e ".[$EXTRAS]"; fi
  echo "$want" > "$stamp"
fi
