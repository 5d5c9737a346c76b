#!/usr/bin/env bash
# The default job on the offline defaults: set up, then run a pipeline (default: sst2-mobile).
#   bash scripts/demo.sh              # the full sst2-mobile pipeline (about 45 minutes on 2 cores)
#   bash scripts/demo.sh smoke        # every stage on a tiny model, under 3 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/albert-edge run pipelines.yaml --pipeline "${1:-sst2-mobile}" "${@:2}"
