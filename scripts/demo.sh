#!/usr/bin/env bash
# The default job on the offline defaults: set up, then run a pipeline (default: sst2-mobile).
#   bash scripts/demo.sh              # the full sst2-mobile pipeline (about 45 minutes on 2 cores)
#   bash scripts/demo.sh sst2-mobile-quick   # the same recipe on 4,000 rows (under 10 minutes)
#   bash scripts/demo.sh smoke        # every stage on a tiny model, about a minute
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
pipeline="${1:-sst2-mobile}"
if [ "$pipeline" = "sst2-mobile" ]; then
  # its last benchmark runs on the emulated arm64 device; without it those rows say "device unavailable"
  bash .ci/device-setup.sh || echo "note: could not build the qemu-aarch64 device (needs root for apt); continuing without it" >&2
fi
exec .venv/bin/albert-edge run pipelines.yaml --pipeline "$pipeline" "${@:2}"
