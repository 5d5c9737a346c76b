#!/usr/bin/env bash
# The test command: set up (idempotently), then run the default suite (everything but `slow`,
# except the emulated-ARM `qemu` tests, which CI must run).
# In CI (CI=true) or with ALBERT_EDGE_DEVICES=1 it first builds the emulated arm64 device and
# the loopback sshd so the qemu and ssh device tests run instead of skipping, and after the main
# run reruns the `kernels` tests (int8 and parity) under other x86-64 CPU models with user-mode
# qemu (scripts/test-cpus.sh: AVX2-only Haswell, pre-AVX2 Nehalem); either failing fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# the optional INC backends are tested too (quick when already installed)
.venv/bin/python -c "import neural_compressor, onnx_neural_compressor" 2>/dev/null || bash scripts/install-inc.sh
if [ "${CI:-}" = "true" ] || [ "${ALBERT_EDGE_DEVICES:-}" = "1" ]; then
  if [ -f .ci/device-setup.sh ]; then bash .ci/device-setup.sh || echo "device set-up failed: qemu/ssh tests will skip" >&2; fi
fi
.venv/bin/ruff check .
status=0
.venv/bin/python -m pytest -m "not slow or qemu" "$@" || status=$?
if [ "${CI:-}" = "true" ] || [ "${ALBERT_EDGE_DEVICES:-}" = "1" ]; then
  bash scripts/test-cpus.sh || status=1
fi
exit $status
