#!/usr/bin/env bash
# Create (or bring up to date) one venv per peer tool under .peers/<peer>/, each from its pinned
# benchmarks/peers/<peer>/requirements.txt with torch held to albert-edge's version
# (constraints.txt: otherwise pip resolves a multi-GB CUDA torch). None of them is a dependency
# of albert-edge, and nothing is installed into albert-edge's own environment.
#
#   benchmarks/peers/setup.sh                  # every peer: optimum olive executorch aiedge
#   benchmarks/peers/setup.sh optimum aiedge   # some
#   PEER_PYTHON=python3.11 benchmarks/peers/setup.sh
#
# Idempotent: a venv whose requirements (and constraints) have not changed since its last
# successful install is left alone. A failed install leaves no stamp, so the next run retries.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
all=(optimum olive executorch aiedge)
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=("${all[@]}")
py="${PEER_PYTHON:-$(command -v python3.11 || command -v python3)}"
status=0
for peer in "${peers[@]}"; do
  req="$here/$peer/requirements.txt"
  if [ ! -f "$req" ]; then
    echo "$peer: unknown peer (no $req); choose from: ${all[*]}" >&2
    status=2
    continue
  fi
  venv="$root/.peers/$peer"
  want="$(cat "$req" "$here/constraints.txt" | sha256sum | cut -d' ' -f1)"
  if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" = "$want" ]; then
    echo "$peer: up to date ($venv)"
    continue
  fi
  echo "$peer: installing into $venv"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  rm -f "$venv/.requirements.sha256"
  if "$venv/bin/python" -m pip install --quiet -c "$here/constraints.txt" -r "$req"; then
    echo "$want" > "$venv/.requirements.sha256"
    echo "$peer: ready"
  else
    echo "$peer: install FAILED (see pip's output above)" >&2
    status=1
  fi
done
exit $status
