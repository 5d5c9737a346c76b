"""A machine-wide reader-writer lock that keeps latency measurement away from builds.

Sweep trials build (train, export, quantize) side by side, but a latency figure is only honest
when nothing else runs on the machine it is measured on. Builds hold the lock shared; a
measurement holds it exclusively, so it starts once every build on this machine has finished and
no build starts until it is done. Writers are preferred (a measurement waiting at the turnstile
holds new builds back), so measurements are not starved by a stream of builds.

The lock is two flock(2)'d files in a directory local to the machine (never on shared storage:
the point is "this machine"). The kernel drops a flock when its process dies, so a worker killed
mid-build or mid-measurement never leaves the lock held.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_DIR_ENV = "ALBERT_EDGE_NODE_LOCK_DIR"


def lock_dir() -> Path:
    """`$ALBERT_EDGE_NODE_LOCK_DIR`, else a per-user directory under the machine's temp dir."""
    env = os.environ.get(LOCK_DIR_ENV)
    d = Path(env) if env else Path(tempfile.gettempdir()) / f"albert-edge-node-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def _flocked(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextlib.contextmanager
def building(directory: Path | None = None) -> Iterator[None]:
    """Held (shared) while a trial builds on this machine."""
    d = directory or lock_dir()
    with _flocked(d / "turnstile.lock", fcntl.LOCK_EX):
        pass  # wait behind any measurement already queued
    with _flocked(d / "machine.lock", fcntl.LOCK_SH):
        yield


@contextlib.contextmanager
def measuring(directory: Path | None = None) -> Iterator[None]:
    """Held (exclusive) while a trial measures on this machine: no build runs meanwhile."""
    d = directory or lock_dir()
    with _flocked(d / "turnstile.lock", fcntl.LOCK_EX), _flocked(d / "machine.lock", fcntl.LOCK_EX):
        yield
