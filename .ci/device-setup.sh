#!/bin/sh
# Install what the ssh and qemu-aarch64 devices and the x86-64 CPU-model reruns need, and build
# the emulated arm64 device once.
# Idempotent: apt is skipped when the tools are there, the sysroot build when it is cached
# (~/.cache/albert-edge/qemu-aarch64 or $ALBERT_EDGE_DEVICE_CACHE/qemu-aarch64).
#   .ci/device-setup.sh [--force]
set -eu
cd "$(dirname "$0")/.."
need=""
# qemu-user-static: qemu-aarch64-static (the arm64 device) and qemu-x86_64-static (scripts/test-cpus.sh)
{ command -v qemu-aarch64-static && command -v qemu-x86_64-static; } >/dev/null || need="$need qemu-user-static"
command -v mmdebstrap >/dev/null || need="$need mmdebstrap"
[ -x /usr/sbin/sshd ] || need="$need openssh-server"
command -v ssh >/dev/null || need="$need openssh-client"
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then echo "device-setup: need root to apt-get install$need" >&2; exit 2; fi
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need
fi
py=python
[ -x .venv/bin/python ] && py=.venv/bin/python
exec "$py" -m albert_edge.cli device setup qemu-aarch64 "$@"
