"""`--device ssh://user@host[:port]`: a real ARM board (Raspberry Pi, Jetson, Graviton) over ssh.

The system `ssh` binary does the work (the user's keys, agent, config and known_hosts apply).
Host keys are checked (`StrictHostKeyChecking=yes`) unless `insecure_accept_new=True` asks for
`accept-new` explicitly. Every remote argument is `shlex.quote`d; nothing from a path or a
model name is pasted into the remote shell unquoted. Directories go over as a tar stream (no
sftp subsystem or rsync needed on the board), files come back with `cat`; a directory holding a
symlink that leads out of it is not sent.

The remote work directory is made by `mktemp` and its path read only from a marker line that
carries a per-session random token, so a login that prints a banner cannot name it; close()
removes only that directory. Each holds an owner file (host, pid, start time): a later session
from this host removes the ones a killed run left.

A dropped connection (ssh exit 255) or a hung one (no answer within the call's timeout plus a
margin) raises DeviceError naming the host; files pulled before that stay where they were put
(`SshDevice.pulled` lists them). A remote command that runs past its timeout is killed on the
board by coreutils `timeout` and returns rc 124, as the Device protocol says.

Options (`get_device(spec, **options)`, or environment variables for the CLI):
    identity / $ALBERT_EDGE_SSH_IDENTITY          private key file (-i, IdentitiesOnly)
    known_hosts / $ALBERT_EDGE_SSH_KNOWN_HOSTS    known_hosts file (default: the user's)
    ssh_config / $ALBERT_EDGE_SSH_CONFIG          an ssh_config file (-F) instead of ~/.ssh/config
    insecure_accept_new / $ALBERT_EDGE_SSH_ACCEPT_NEW=1   trust a host key seen the first time
    connect_timeout (s), remote_python (default python3)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from benchmarks.devices.base import REPO_ROOT, DeviceError, DeviceSpec, pushable
from benchmarks.devices.scratch import host_tag, owner_alive, owner_tag

SSH_DROPPED = 255  # ssh's own exit code for connection errors
WORKDIR_PREFIX = "albert-edge."  # + mktemp's 6 characters
OWNER_FILE = ".albert-edge-owner"  # in each remote work dir: HOST-pPID-START of the local process
_WORKDIR = re.compile(r"^/(?:[A-Za-z0-9._+-]*/)*albert-edge\.[A-Za-z0-9]{6}$")
TIMEOUT_RC = 124
# hoststamp.py is standard-library only: its source runs on the board as it is, plus what only
# the board's login can say (its name, and whether it runs under emulation)
STAMP_CODE = (REPO_ROOT / "benchmarks" / "hoststamp.py").read_text() + (
    "\nimport json\n"
    "_stamp = host_stamp()\n"
    "_stamp['node'] = platform.node()\n"
    "_stamp['emulated'] = bool(os.environ.get('ALBERT_EDGE_EMULATED')) or 'emulated' in (_stamp.get('cpu_model') or '')\n"
    "print(json.dumps(_stamp))\n"
)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


class SshDevice:
    """A board reached with the system ssh client; see the module docstring."""

    python = True

    def __init__(
        self,
        spec: DeviceSpec,
        identity: str | Path | None = None,
        known_hosts: str | Path | None = None,
        ssh_config: str | Path | None = None,
        insecure_accept_new: bool = False,
        connect_timeout: float = 10.0,
        remote_python: str = "python3",
    ) -> None:
        if not spec.host or spec.host.startswith("-") or (spec.user or "").startswith("-"):
            raise DeviceError(f"{spec.raw}: not a usable ssh destination")
        self.name = spec.raw
        self.spec = spec
        self.identity = identity or os.environ.get("ALBERT_EDGE_SSH_IDENTITY") or None
        self.known_hosts = known_hosts or os.environ.get("ALBERT_EDGE_SSH_KNOWN_HOSTS") or None
        self.ssh_config = ssh_config or os.environ.get("ALBERT_EDGE_SSH_CONFIG") or None
        self.insecure_accept_new = insecure_accept_new or _env_flag("ALBERT_EDGE_SSH_ACCEPT_NEW")
        self.connect_timeout = float(connect_timeout)
        self.remote_python = remote_python
        self.pulled: list[Path] = []  # local copies of files pulled so far (kept on errors)
        self._workdir: str | None = None
        self._has_timeout = False
        self._stamp: dict[str, Any] | None = None

    # ------------------------------------------------------------------ transport

    @property
    def destination(self) -> str:
        return f"{self.spec.user}@{self.spec.host}" if self.spec.user else str(self.spec.host)

    def ssh_argv(self, remote_command: str) -> list[str]:
        """The full local argv for one remote command (already quoted by the caller)."""
        argv = ["ssh"]
        if self.ssh_config:
            argv += ["-F", str(self.ssh_config)]
        opts = {
            "BatchMode": "yes",  # never prompt: a missing key fails fast instead of hanging
            "StrictHostKeyChecking": "accept-new" if self.insecure_accept_new else "yes",
            "ConnectTimeout": str(max(1, int(self.connect_timeout))),
            # keep-alives also end a handshake that stalls after the greeting (3 unanswered)
            "ServerAliveInterval": str(max(1, min(5, int(self.connect_timeout)))),
            "ServerAliveCountMax": "3",
            "LogLevel": "ERROR",
        }
        if self.known_hosts:
            opts["UserKnownHostsFile"] = str(self.known_hosts)
        if self.identity:
            argv += ["-i", str(self.identity)]
            opts["IdentitiesOnly"] = "yes"
        for key, value in opts.items():
            argv += ["-o", f"{key}={value}"]
        if self.spec.port:
            argv += ["-p", str(self.spec.port)]
        return [*argv, "--", self.destination, remote_command]

    def _ssh(
        self, remote_command: str, timeout: float, stdin_writer: Any = None, stdout: IO[bytes] | None = None
    ) -> tuple[int, bytes, str]:
        """Run one ssh call; DeviceError if the connection fails, drops or hangs past `timeout`."""
        proc = subprocess.Popen(
            self.ssh_argv(remote_command),
            stdin=subprocess.PIPE if stdin_writer else subprocess.DEVNULL,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        hung = threading.Event()

        def kill() -> None:
            hung.set()
            proc.kill()

        writer = None
        if stdin_writer is not None:  # fed by a thread while communicate() drains stdout/stderr
            pipe, proc.stdin = proc.stdin, None

            def feed() -> None:
                try:
                    stdin_writer(pipe)
                    pipe.close()
                except (BrokenPipeError, ConnectionResetError, OSError, ValueError):
                    pass  # the exit code below says why the other end went away

            writer = threading.Thread(target=feed, daemon=True)
            writer.start()
        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            out, err = proc.communicate()
            if writer is not None:
                writer.join(timeout=5)
        finally:
            timer.cancel()
        err_text = (err or b"").decode(errors="replace").strip()
        if hung.is_set():
            raise DeviceError(
                f"{self.name}: no answer within {timeout:.0f}s (connection hung or the board is overloaded); "
                f"{len(self.pulled)} result file(s) pulled before this are kept"
            )
        if proc.returncode == SSH_DROPPED:
            raise DeviceError(
                f"{self.name}: ssh connection failed or dropped ({_last_line(err_text) or 'exit 255'}); "
                f"{len(self.pulled)} result file(s) pulled before this are kept"
                + _hint(err_text)
            )
        return proc.returncode, out or b"", err_text

    def _ensure_workdir(self) -> str:
        """A private directory on the board for this session (removed by close()).

        Its path is read only from a marker line that carries a fresh random token, never from
        the first word of the reply: a login that prints a banner (or a forged marker) cannot
        name the directory that close() removes. The directory holds an owner file (this host
        and process); work dirs left by a killed run of this host are removed on the way."""
        if self._workdir is None:
            nonce = secrets.token_hex(8)
            marker, timeout_marker, owner_marker = (
                f"ALBERT_EDGE_WORKDIR_{nonce}=",
                f"ALBERT_EDGE_HAS_TIMEOUT_{nonce}",
                f"ALBERT_EDGE_OWNER_{nonce}=",
            )
            cmd = (
                f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/{WORKDIR_PREFIX}XXXXXX") && printf "%s\\n" {shlex.quote(owner_tag())} > '
                f'"$d/{OWNER_FILE}" && '
                f'printf "%s%s\\n" {marker} "$d" && '
                f"if command -v timeout >/dev/null 2>&1; then echo {timeout_marker}; fi; "
                f'for o in "${{TMPDIR:-/tmp}}"/{WORKDIR_PREFIX}??????/{OWNER_FILE}; do '
                f'if [ -f "$o" ] && [ "${{o%/*}}" != "$d" ]; then printf "%s%s %s\\n" {owner_marker} "${{o%/*}}" "$(sed -n 1p "$o")"; fi; '
                'done; true'
            )
            rc, out, err = self._ssh(cmd, 30 + self._margin())
            lines = [ln.strip("\r") for ln in out.decode(errors="replace").splitlines()]
            found = [ln[len(marker):] for ln in lines if ln.startswith(marker)]
            if rc != 0 or len(found) != 1 or not is_own_workdir(found[0]):
                why = _last_line(err) or (
                    f"exit {rc}" if rc != 0 else f"the reply has no usable work-directory line: {_first_line(lines)!r}"
                )
                raise DeviceError(f"{self.name}: cannot create a work directory ({why})")
            self._workdir = found[0]
            self._has_timeout = timeout_marker in lines
            self._sweep_stale([ln[len(owner_marker):] for ln in lines if ln.startswith(owner_marker)])
        return self._workdir

    def _sweep_stale(self, owned: list[str]) -> None:
        """Remove work dirs whose owner file names a dead process of this host (a killed run)."""
        stale = []
        for entry in owned[:200]:
            path, _, owner = entry.partition(" ")
            m = re.fullmatch(r"([0-9a-f]{8})-p(\d+)-(\d+)", owner.strip())
            if is_own_workdir(path) and path != self._workdir and m and m[1] == host_tag() and not owner_alive(int(m[2]), int(m[3])):
                stale.append(shlex.quote(path))
        if not stale:
            return
        cmd = f'for d in {" ".join(stale)}; do if [ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/{OWNER_FILE}" ]; then rm -rf -- "$d"; fi; done'
        try:
            self._ssh(cmd, 60 + self._margin())
        except DeviceError:
            pass  # best effort: the next session tries again

    def _margin(self) -> float:
        return self.connect_timeout + 15.0

    # ------------------------------------------------------------------ Device protocol

    def stamp(self) -> dict[str, Any]:
        """What the board says about itself (asked once per session)."""
        if self._stamp is None:
            rc, out, err = self.run_python(["-c", STAMP_CODE], 60)
            facts: dict[str, Any] = _last_json(out) if rc == 0 else {}
            node = facts.pop("node", None)
            self._stamp = {"device": f"{self.name}" + (f" ({node})" if node else ""), **facts}
            if self._stamp.get("emulated"):
                self._stamp["latency_note"] = "the ssh login runs under emulation: latencies are not device speed"
        return dict(self._stamp)

    def push(self, local_dir: Path) -> str:
        local_dir = pushable(self.name, local_dir, "sending")
        dest = f"{self._ensure_workdir()}/{local_dir.name}"

        def send(pipe: IO[bytes]) -> None:
            with tarfile.open(fileobj=pipe, mode="w|", dereference=True) as tar:
                tar.add(str(local_dir), arcname=".")

        cmd = f"rm -rf {shlex.quote(dest)} && mkdir -p {shlex.quote(dest)} && tar -x -f - -C {shlex.quote(dest)}"
        size = sum(p.stat().st_size for p in local_dir.rglob("*") if p.is_file())
        rc, _, err = self._ssh(cmd, 120 + size / 1e6 + self._margin(), stdin_writer=send)
        if rc != 0:
            raise DeviceError(f"{self.name}: copying {local_dir} to {dest} failed ({_last_line(err) or f'exit {rc}'})")
        return dest

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        if not argv:
            raise ValueError("empty command")
        self._ensure_workdir()
        quoted = " ".join(shlex.quote(str(a)) for a in argv)
        if self._has_timeout:  # the board kills an overrunning command itself (rc 124)
            quoted = f"timeout -k 5 {max(1, int(timeout))} {quoted}"
        rc, out, err = self._ssh(quoted, timeout + self._margin())
        return rc, out.decode(errors="replace"), err

    def run_python(self, args: list[str], timeout: float) -> tuple[int, str, str]:
        return self.run([self.remote_python, *args], timeout)

    def pull(self, remote_path: str, local_path: Path) -> None:
        """Copy one file back; written to a temporary name first so a drop leaves no half file."""
        local_path = Path(local_path)
        local_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local_path.name}.", dir=local_path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                rc, _, err = self._ssh(f"cat -- {shlex.quote(remote_path)}", 300 + self._margin(), stdout=fh)
            if rc != 0:
                raise DeviceError(f"{self.name}: cannot read {remote_path} ({_last_line(err) or f'exit {rc}'})")
            os.replace(tmp, local_path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.pulled.append(local_path)

    def close(self) -> None:
        """Remove the work directory on the board, and only a directory this session made
        (a mktemp name under a temp dir, still a real directory there); a board that went
        away is left as it is."""
        workdir, self._workdir = self._workdir, None
        if workdir is None or not is_own_workdir(workdir):
            return
        q = shlex.quote(workdir)
        try:
            self._ssh(f"if [ -d {q} ] && [ ! -L {q} ]; then rm -rf -- {q}; fi", 30 + self._margin())
        except DeviceError:
            pass


def open_device(spec: DeviceSpec, **options: Any) -> SshDevice:
    known = {"identity", "known_hosts", "ssh_config", "insecure_accept_new", "connect_timeout", "remote_python"}
    return SshDevice(spec, **{k: v for k, v in options.items() if k in known})


def is_own_workdir(path: str) -> bool:
    """A path this module's mktemp can have made: absolute, `.../albert-edge.XXXXXX`, no `..`."""
    return bool(_WORKDIR.match(path)) and ".." not in path.split("/")


def _first_line(lines: list[str]) -> str:
    return next((ln.strip()[:120] for ln in lines if ln.strip()), "")


def _last_json(text: str) -> dict[str, Any]:
    """The last JSON object line of a reply (a login banner may come before it)."""
    for line in reversed(text.strip().splitlines()):
        if line.strip().startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return {}


def _last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _hint(err: str) -> str:
    """What a failed ssh call most likely means, as a `; ...` suffix (empty if unknown)."""
    low = err.lower()
    if not low.strip():
        return ("; ssh printed no reason: the port answered but the ssh handshake never completed (is this sshd's port, "
                "or is sshd overloaded: MaxStartups?), or the remote command itself exited 255; `ssh -v` shows which")
    if "banner exchange" in low or "kex_exchange_identification" in low:
        return ("; the port answered but the ssh handshake did not complete: is this sshd's port (not another service), "
                "or is sshd overloaded (MaxStartups)?")
    if "host key verification failed" in low or "no matching host key" in low or "remote host identification has changed" in low:
        return ("; the host key is not in known_hosts: check it, then `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts` "
                "(or insecure_accept_new=True)")
    if "permission denied" in low:
        return "; key login refused: add your public key to the board's ~/.ssh/authorized_keys (BatchMode: no passwords)"
    if "connection refused" in low or "timed out" in low or "no route" in low:
        return "; is sshd running on the board and the port right?"
    return ""


__all__ = ["SshDevice", "open_device"]
