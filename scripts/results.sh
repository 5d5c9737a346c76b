#!/usr/bin/env bash
# Regenerate every committed results file under benchmarks/results/ (one run id on every row):
#   bash scripts/results.sh                    # sst2-mobile (+ the A/B/C comparison) and albert-base-v2-latency
#   bash scripts/results.sh -p sst2-mobile --rounds 5
# Commit first: rows measured from a checkout with uncommitted changes fail the results check.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# sst2-mobile's last benchmark runs on the emulated arm64 device; without it those rows are errors
bash .ci/device-setup.sh || echo "note: could not build the qemu-aarch64 device (needs root for apt); continuing without it" >&2
exec .venv/bin/python -m benchmarks.rebuild_results "$@"
