#!/usr/bin/env bash
# The test command: set up (idempotently), then run the default suite (everything but `slow`,
# except the emulated-ARM `qemu` tests, which CI must run).
# In CI (CI=true) or with ALBERT_EDGE_DEVICES=1 it first builds the emulated arm64 device and
# the loopback sshd so the qemu and ssh device tests run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the optional INC backends are tested too (quick when already installed)
.venv/bin/python -c "import neural_compressor, onnx_neural_compressor" 2>/dev/null || bash scripts/install-inc.sh
if [ "${CI:-}" = "true" ] || [ "${ALBERT_EDGE_DEVICES:-}" = "1" ]; then
  if [ -f .ci/device-setup.sh ]; then bash .ci/device-setup.sh || echo "device set-up failed: qemu/ssh tests will skip" >&2; fi
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -m "not slow or qemu" "$@"
