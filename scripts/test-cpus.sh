#!/usr/bin/env bash
# Rerun the `kernels`-marked tests (int8 and parity results) on other x86-64 CPU models under
# user-mode qemu, so every int8 kernel path onnxruntime/MLAS picks is exercised on any host:
#   Haswell: AVX2 without AVX-512/VNNI (u8s8 via vpmaddubsw, which saturates at int16)
#   Nehalem: SSE4.2, no AVX (the pre-AVX2 path)
# The host's own path (e.g. AVX-512 VNNI) is what the main run took.
#   scripts/test-cpus.sh [test files/ids...]   CPU models: $ALBERT_EDGE_QEMU_CPUS (space-separated)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(uname -m)" != x86_64 ]; then
  echo "test-cpus: host is $(uname -m); the x86-64 CPU models are checked on x86-64 hosts only" >&2
  exit 0
fi
command -v qemu-x86_64-static >/dev/null || { echo "test-cpus: qemu-x86_64-static missing: apt-get install qemu-user-static (.ci/device-setup.sh does)" >&2; exit 2; }
py=.venv/bin/python
# unsupported system features are dropped so TCG does not warn about them; the ISA stays the model's
cpus=${ALBERT_EDGE_QEMU_CPUS:-"Haswell-noTSX,-pcid,-invpcid,-x2apic,-tsc-deadline Nehalem"}
# Collect only the modules that hold kernels tests: others import libraries that refuse some
# CPU models at import time (jaxlib, under litert-torch, needs AVX: an error on Nehalem).
if [ $# -eq 0 ]; then
  # shellcheck disable=SC2046
  set -- $(grep -l 'pytest.mark.kernels' tests/*.py)
fi
status=0
for cpu in $cpus; do
  start=$(date +%s)
  isa=$(qemu-x86_64-static -cpu "$cpu" "$py" -c 'from tests.conftest import cpu_isa; print(cpu_isa())') || isa="?"
  echo "== kernels under qemu-x86_64 -cpu ${cpu%%,*}: cpu isa: $isa"
  ALBERT_EDGE_QEMU_CPU="$cpu" qemu-x86_64-static -cpu "$cpu" "$py" -m pytest -m kernels -p no:cacheprovider -q "$@" || status=1
  echo "== -cpu ${cpu%%,*}: $(( $(date +%s) - start )) s"
done
exit $status
