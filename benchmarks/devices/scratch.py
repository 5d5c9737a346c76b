"""Temporary directories of benchmark runs, named after the process that owns them.

A benchmark killed mid-run (SIGKILL, a lost terminal) cannot remove its staged copies of the
model files and its inputs.npz. Every such directory is made here, in the system temp dir, as
`albert-edge-KIND.HOST-pPID-START.XXXXXXXX` (HOST: a short hash of the host name, so a temp dir
shared with another machine or container is left to it; START: the owner's start time, so a
reused pid is not taken for the owner). `sweep()` removes the ones whose owner is gone; the
harness runs it at start-up and `albert-edge clean` runs it too. Live runs' dirs are never touched.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PREFIX = "albert-edge-"
_NAME = re.compile(r"^albert-edge-(?P<kind>[a-z]+)\.(?P<host>[0-9a-f]{8})-p(?P<pid>\d+)-(?P<start>\d+)\.[A-Za-z0-9_]+$")


def host_tag() -> str:
    """8 hex digits naming this machine (its host name), shared by every process on it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (Linux), 0 where it cannot be read."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        return int(stat_line.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return 0


def owner_tag(pid: int | None = None) -> str:
    """`HOST-pPID-START` of this (or the given) process."""
    pid = os.getpid() if pid is None else pid
    return f"{host_tag()}-p{pid}-{_start_time(pid)}"


def owner_alive(pid: int, start: int) -> bool:
    """True while the process that made a directory may still be running."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's live process
    now = _start_time(pid)
    return not (start and now and now != start)  # a different process now has that pid


def make_scratch_dir(kind: str, root: Path | None = None) -> Path:
    """A new owner-stamped directory (the caller removes it; `sweep` does if the caller dies)."""
    if not re.fullmatch(r"[a-z]+", kind):
        raise ValueError(f"scratch kind {kind!r}: lower-case letters only")
    return Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}.{owner_tag()}.", dir=root))


@contextmanager
def scratch_dir(kind: str, root: Path | None = None) -> Iterator[Path]:
    """An owner-stamped temporary directory, removed when the block ends."""
    path = make_scratch_dir(kind, root)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep(root: Path | None = None) -> list[Path]:
    """Remove this user's scratch directories whose owner process is gone; return them."""
    root = Path(root or tempfile.gettempdir())
    removed: list[Path] = []
    here = host_tag()
    try:
        candidates = sorted(root.glob(f"{PREFIX}*"))
    except OSError:
        return removed
    for path in candidates:
        m = _NAME.match(path.name)
        if not m or m["host"] != here:
            continue
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            continue
        if owner_alive(int(m["pid"]), int(m["start"])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    return removed


__all__ = ["host_tag", "make_scratch_dir", "owner_alive", "owner_tag", "scratch_dir", "sweep"]
