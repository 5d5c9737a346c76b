"""The one Device interface the benchmark harness talks to, and the parser of `--device` specs.

A device is somewhere a model file runs: this machine, an ssh host, an emulated arm64 sysroot,
or an Android phone. The harness pushes a directory (measure.py, the edge_runtime package, model files,
inputs), runs one child process per (model file, runtime) there, and reads one JSON line back.
Devices that have no Python (adb phones) set `python = False` and are driven through `run`.

Implementations: local.py, adb.py (this package), ssh.py and qemu.py. Each module exposes
`open_device(spec: DeviceSpec, **options) -> Device`.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

# What a Python device needs to run measurements: measure.py imports only hoststamp.py, the
# edge_runtime package (a directory) and numpy.
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGE = REPO_ROOT / "edge_runtime"
PAYLOAD_FILES = (REPO_ROOT / "benchmarks" / "measure.py", REPO_ROOT / "benchmarks" / "hoststamp.py", RUNTIME_PACKAGE)
# Keys every stamp has (values may be None where a device cannot tell).
STAMP_KEYS = ("device", "arch", "cpu_model", "cores", "os", "emulated")


class DeviceError(RuntimeError):
    """A device that cannot be reached or used: the message says what to fix."""


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed `--device` string."""

    kind: str  # local | ssh | adb | qemu-aarch64
    raw: str
    user: str | None = None
    host: str | None = None
    port: int | None = None
    serial: str | None = None
    cpu: str | None = None  # qemu-aarch64: the `-cpu` model and switches (None: the default model)


@runtime_checkable
class Device(Protocol):
    """Where the harness runs models. Remote paths are POSIX strings on the device."""

    name: str
    python: bool  # True: can run measure.py; False: only native binaries (adb + benchmark_model)

    def stamp(self) -> dict[str, Any]:
        """device, arch, cpu_model, cores, os, emulated (+ anything else worth recording)."""
        ...

    def push(self, local_dir: Path) -> str:
        """Copy a directory to the device; return its path there (local: the same directory)."""
        ...

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        """Run a command on the device: (returncode, stdout, stderr). Timeout gives rc 124."""
        ...

    def run_python(self, args: list[str], timeout: float) -> tuple[int, str, str]:
        """Run the device's Python with `args` (a script path on the device first)."""
        ...

    def pull(self, remote_path: str, local_path: Path) -> None:
        """Copy one file back from the device."""
        ...

    def close(self) -> None:
        """Release connections and temporary files on the device."""
        ...


def parse_spec(spec: str) -> DeviceSpec:
    """`local`, `ssh://user@host[:port]`, `adb`, `adb:SERIAL`, `qemu-aarch64[:CPU[,switch=on|off]]`;
    ValueError otherwise."""
    s = spec.strip()
    if s == "local":
        return DeviceSpec("local", s)
    if s == "qemu-aarch64" or s.startswith("qemu-aarch64:"):
        from benchmarks.devices.qemu_cpus import parse_cpu

        cpu = s[len("qemu-aarch64:"):] or None
        parse_cpu(cpu)  # ValueError for a model this device cannot emulate
        return DeviceSpec("qemu-aarch64", s, cpu=cpu)
    if s == "adb" or s.startswith("adb:"):
        serial = s[4:] or None
        return DeviceSpec("adb", s, serial=serial)
    if s.startswith("ssh://"):
        rest = s[len("ssh://"):].rstrip("/")
        user, _, hostport = rest.rpartition("@")
        host, sep, port = hostport.partition(":")
        if not host:
            raise ValueError(f"device {spec!r}: no host (use ssh://user@host[:port])")
        if ":" in hostport and not port:
            raise ValueError(f"device {spec!r}: empty port (drop the ':' for ssh's default, or give 1..65535)")
        if port and not port.isdigit():
            raise ValueError(f"device {spec!r}: port {port!r} is not a number")
        if port and not 1 <= int(port) <= 65535:
            raise ValueError(f"device {spec!r}: port {port} is outside 1..65535")
        return DeviceSpec("ssh", s, user=user or None, host=host, port=int(port) if port else None)
    raise ValueError(f"unknown device {spec!r}: use local, ssh://user@host[:port], adb[:serial] or qemu-aarch64[:cpu]")


_MODULES = {
    "local": "benchmarks.devices.local",
    "adb": "benchmarks.devices.adb",
    "ssh": "benchmarks.devices.ssh",
    "qemu-aarch64": "benchmarks.devices.qemu",
}


def get_device(spec: str, **options: Any) -> Device:
    """Open the device a `--device` string names. Options go to the implementation
    (e.g. adb: benchmark_model=PATH). Raises ValueError (bad spec) or DeviceError."""
    parsed = parse_spec(spec)
    try:
        module = importlib.import_module(_MODULES[parsed.kind])
    except ImportError as err:
        raise DeviceError(f"device kind {parsed.kind!r} is not available here ({err})") from None
    return module.open_device(parsed, **options)


def pushable(device: str, local_dir: Path, verb: str = "sending") -> Path:
    """`local_dir` if a device may take it: a named directory with no link leading out of it;
    DeviceError (naming the device) otherwise."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir() or local_dir.name in ("", ".", ".."):
        raise DeviceError(f"{device}: {local_dir} is not a named directory")
    outside = links_outside(local_dir)
    if outside:
        raise DeviceError(f"{device}: not {verb} {local_dir}: {outside[0]} links outside it (copy the file in instead)")
    return local_dir


def links_outside(local_dir: Path) -> list[Path]:
    """Symlinks under local_dir that point outside it (or nowhere): a pushed directory follows
    links, so these would copy files from elsewhere on this machine onto the device."""
    root = Path(local_dir).resolve()
    bad = []
    for p in sorted(Path(local_dir).rglob("*")):
        if p.is_symlink():
            try:
                target = p.resolve(strict=True)
            except (OSError, RuntimeError):
                bad.append(p)
                continue
            if target != root and root not in target.parents:
                bad.append(p)
    return bad


def run_command(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run argv without a shell; (rc, stdout, stderr); rc 124 and a note on timeout, 127 if missing."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return 124, out, f"timed out after {timeout:.0f}s: {' '.join(argv[:3])} ..."
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: command not found"
    return proc.returncode, proc.stdout, proc.stderr


def copy_payload(dest: Path) -> None:
    """Lay PAYLOAD_FILES into `dest` as a device runs them: files and the package side by side."""
    for f in PAYLOAD_FILES:
        if f.is_dir():
            shutil.copytree(f, dest / f.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            shutil.copy2(f, dest / f.name)


def full_stamp(device: Device, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge what the child measured on the device (platform facts) with what the device knows
    (name, emulated flag): the device's non-None values win, every STAMP_KEY is present."""
    out: dict[str, Any] = {k: None for k in STAMP_KEYS}
    out.update(measured or {})
    out.update({k: v for k, v in device.stamp().items() if v is not None})
    out["emulated"] = bool(out.get("emulated"))
    return out
