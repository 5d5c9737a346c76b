"""A lease on one cache key, so that runs sharing a cache (processes on one machine, or machines
mounting the same storage) build each artifact once: one holder builds, the others wait and reuse.

The lease is a file created with O_CREAT|O_EXCL (atomic on local filesystems and on NFSv3+),
holding the owner's host, machine identity, pid and process start time, and a random token.
The holder refreshes the file's mtime (its heartbeat) from a background thread. A lease is stale,
and may be taken over, when its owner is provably gone: on the same machine (same boot and pid
namespace) when the pid is dead or now belongs to a younger process; elsewhere, when the heartbeat
is older than `stale_after` seconds by the storage's own clock. Taking over goes through a short
breaker file, so two waiters cannot both remove a lease and one of them remove a fresh one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0  # other machines: a lease whose heartbeat is older than this is dead
DEFAULT_WAIT_S = 6 * 3600.0  # a waiter gives up after this (ALBERT_EDGE_LEASE_WAIT overrides)
BREAKER_STALE_S = 30.0  # a breaker file is held for milliseconds; older means its owner died


class LeaseTimeout(RuntimeError):
    """Waited longer than allowed for another holder to finish."""


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def machine_id() -> str:
    """Identifies one running kernel and pid namespace: pids are comparable only within it."""
    boot = _read(Path("/proc/sys/kernel/random/boot_id")).strip()
    try:
        ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        ns = ""
    return f"{socket.gethostname()}/{boot}/{ns}"


def process_start(pid: int) -> str:
    """The kernel's start time of `pid` (clock ticks since boot), '' if unknown: it tells a
    reused pid from the original process."""
    stat = _read(Path(f"/proc/{pid}/stat"))
    if not stat:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def pid_alive(pid: int, start: str = "") -> bool:
    """Whether `pid` still runs the process that started at `start` (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _read(Path(f"/proc/{pid}/stat"))
    if stat and stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    now = process_start(pid)
    return not (start and now and now != start)


def wait_limit() -> float:
    """Seconds a run waits for another holder: ALBERT_EDGE_LEASE_WAIT, else DEFAULT_WAIT_S."""
    try:
        return float(os.environ.get("ALBERT_EDGE_LEASE_WAIT", DEFAULT_WAIT_S))
    except ValueError:
        return DEFAULT_WAIT_S


@dataclass(frozen=True)
class Owner:
    """Who holds a lease, as written in the lease file."""

    host: str
    machine: str
    pid: int
    start: str
    token: str
    since: float

    @classmethod
    def me(cls) -> Owner:
        pid = os.getpid()
        return cls(socket.gethostname(), machine_id(), pid, process_start(pid), uuid.uuid4().hex, time.time())

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        try:
            d = json.loads(text)
            return cls(str(d["host"]), str(d["machine"]), int(d["pid"]), str(d["start"]), str(d["token"]), float(d["since"]))
        except (ValueError, KeyError, TypeError):
            return None

    def dump(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {time.strftime('%H:%M:%S', time.localtime(self.since))}"


def fs_now(directory: Path) -> float:
    """The current time by the clock of the storage holding `directory` (mtimes on shared storage
    come from the server, so compare them with the server's time, not this machine's)."""
    probe = directory / f".clock-{uuid.uuid4().hex}"
    try:
        probe.touch()
        try:
            return probe.stat().st_mtime
        finally:
            probe.unlink(missing_ok=True)
    except OSError:
        return time.time()


def is_stale(path: Path, owner: Owner | None, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether the lease at `path` (read as `owner`) belongs to a holder that is gone."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return False  # already released
    if owner is None:  # unreadable: a holder died between create and write, or a foreign file
        return fs_now(path.parent) - mtime > max(stale_after, HEARTBEAT_S)
    if owner.machine == machine_id():
        return not pid_alive(owner.pid, owner.start)
    return fs_now(path.parent) - mtime > stale_after


def read_owner(path: Path) -> Owner | None:
    return Owner.parse(_read(path))


class Lease:
    """One held lease. Release it (or use as a context manager) when the work is committed."""

    def __init__(self, path: Path, owner: Owner, heartbeat: float = HEARTBEAT_S) -> None:
        self.path = path
        self.owner = owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat,), daemon=True, name=f"lease-{path.name}")
        self._thread.start()

    @property
    def token(self) -> str:
        return self.owner.token

    def _beat(self, every: float) -> None:
        while not self._stop.wait(every):
            with contextlib.suppress(OSError):
                if self.held():
                    os.utime(self.path)

    def held(self) -> bool:
        """Still ours (not taken over by a waiter that judged us dead)."""
        found = read_owner(self.path)
        return found is not None and found.token == self.token

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def try_acquire(path: Path, stale_after: float = STALE_AFTER_S, heartbeat: float = HEARTBEAT_S,
                on_takeover: Callable[[Owner | None], None] | None = None) -> Lease | None:
    """The lease at `path` if it is free or its holder is gone, else None. Never waits."""
    path.parent.mkdir(parents=True, exist_ok=True)
    me = Owner.me()
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held_by = read_owner(path)
            if not is_stale(path, held_by, stale_after):
                return None
            if _break(path, held_by, stale_after) and on_takeover:
                on_takeover(held_by)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(me.dump())
            fh.flush()
            os.fsync(fh.fileno())
        return Lease(path, me, heartbeat)
    return None


def break_if_stale(path: Path, stale_after: float = STALE_AFTER_S) -> bool:
    """Remove the lease at `path` if its holder is gone; True if removed."""
    owner = read_owner(path)
    return is_stale(path, owner, stale_after) and _break(path, owner, stale_after)


def _break(path: Path, judged: Owner | None, stale_after: float) -> bool:
    """Remove a stale lease, under a breaker file so that only the lease judged stale is removed."""
    breaker = path.with_name(path.name + ".break")
    try:
        fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        with contextlib.suppress(OSError):
            if fs_now(path.parent) - breaker.stat().st_mtime > BREAKER_STALE_S:
                breaker.unlink()
        return False
    os.close(fd)
    try:
        now = read_owner(path)
        same = (now is None and judged is None) or (now is not None and judged is not None and now.token == judged.token)
        if same and is_stale(path, now, stale_after):
            path.unlink(missing_ok=True)
            return True
        return False
    finally:
        breaker.unlink(missing_ok=True)


def acquire(path: Path, *, what: str, log: logging.Logger, wait: float | None = None, stale_after: float = STALE_AFTER_S,
            heartbeat: float = HEARTBEAT_S, log_every: float = 30.0) -> Lease:
    """Hold the lease at `path`, waiting (visibly, for at most `wait` seconds; Ctrl-C stops it)
    while a live holder has it."""
    wait = wait_limit() if wait is None else wait
    t0 = time.monotonic()
    last_log = -log_every
    pause = 0.2

    def took_over(old: Owner | None) -> None:
        log.info("  %s: took over the lease of %s (owner gone)", what, old.describe() if old else "an unknown owner")

    while True:
        lease = try_acquire(path, stale_after, heartbeat, took_over)
        if lease is not None:
            return lease
        waited = time.monotonic() - t0
        if waited > wait:
            held_by = read_owner(path)
            raise LeaseTimeout(f"{what}: still being built by {held_by.describe() if held_by else 'another run'} "
                               f"after {waited:.0f}s (lease {path}); set ALBERT_EDGE_LEASE_WAIT to wait longer")
        if waited - last_log >= log_every:
            held_by = read_owner(path)
            log.info("  %s: waiting for %s to finish building it (%.0fs so far; lease %s)", what,
                     held_by.describe() if held_by else "another run", waited, path)
            last_log = waited
        time.sleep(pause)
        pause = min(pause * 1.5, 2.0)
