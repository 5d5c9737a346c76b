"""`--device adb[:serial]`: an Android phone over adb, measured with LiteRT's `benchmark_model`.

Phones have no Python, so this device pushes only the .tflite files (and the benchmark_model
binary when its path is on the host), runs benchmark_model once per file, and parses its
output: init time, first inference, warm-up and steady-state averages, std, min/max, median
when printed, and the memory lines. It needs a phone with USB debugging on; the tests parse
recorded output and check the adb command lines against a fake adb.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from pathlib import Path
from typing import Any

from benchmarks.devices.base import DeviceError, DeviceSpec, run_command

REMOTE_ROOT = "/data/local/tmp/albert-edge"
_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
_TIMINGS = re.compile(rf"Inference timings in us: Init: {_NUM}, First inference: {_NUM}, Warmup \(avg\): {_NUM}, Inference \(avg\): {_NUM}")
_COUNT = re.compile(
    rf"count=(\d+)(?: first={_NUM})? curr={_NUM}(?: min={_NUM} max={_NUM} avg={_NUM} std={_NUM})?(?: p5={_NUM} median={_NUM} p95={_NUM})?"
)
_DELTA = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): init={_NUM} overall={_NUM}")
_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUM}")
_SIZE = re.compile(rf"The input model file size \(MB\): {_NUM}")
_INIT_SESSION = re.compile(rf"Initialized session in {_NUM}\s*ms")
_THREADS = re.compile(r"#threads used for CPU inference: \[(\d+)\]")
_ERROR = re.compile(r"(?:ERROR|E/tflite[^:]*|Failed|failed)[: ].*")


def parse_benchmark_output(text: str) -> dict[str, Any]:
    """benchmark_model's log (plain or logcat-prefixed) -> numbers in ms / MB; `ok` False with
    the first error line when the run did not reach its timing summary."""
    out: dict[str, Any] = {"ok": False}
    counts = [m for m in _COUNT.finditer(text) if m.group(5) is not None]
    m = _TIMINGS.search(text)
    if not m:
        err = _ERROR.search(text)
        out["error"] = f"benchmark_model: {err.group(0).strip()[:300]}" if err else "benchmark_model printed no timing summary"
        return out
    init_us, first_us, warm_us, avg_us = (float(g) for g in m.groups())
    out.update(ok=True, load_ms=init_us / 1000.0, first_ms=first_us / 1000.0, warmup_mean_ms=warm_us / 1000.0, mean_ms=avg_us / 1000.0)
    if counts:
        steady = counts[-1]  # the last `count=` line is the timed run (the first is warm-up)
        out["runs"] = int(steady.group(1))
        out["min_ms"], out["max_ms"] = float(steady.group(4)) / 1000.0, float(steady.group(5)) / 1000.0
        out["std_ms"] = float(steady.group(7)) / 1000.0
        out["cv"] = out["std_ms"] / out["mean_ms"] if out["mean_ms"] > 0 else None
        if steady.group(9) is not None:
            out["p5_ms"], out["p50_ms"], out["p95_ms"] = (float(steady.group(i)) / 1000.0 for i in (8, 9, 10))
        if len(counts) > 1:
            out["warmup_runs"] = int(counts[0].group(1))
    if (d := _DELTA.search(text)) and (float(d.group(1)), float(d.group(2))) != (0.0, 0.0):  # old tools print 0/0: unknown
        out["rss_init_mb"], out["rss_growth_mb"] = float(d.group(1)), float(d.group(2))
    if p := _PEAK.search(text):
        out["rss_peak_mb"] = float(p.group(1))
    if s := _SIZE.search(text):
        out["model_size_mb"] = float(s.group(1))
    if t := _THREADS.search(text):
        out["threads"] = int(t.group(1))
    if i := _INIT_SESSION.search(text):
        out["session_init_ms"] = float(i.group(1))
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


def benchmark_model_args(binary: str, graph: str, threads: int, runs: int, warmup: int, min_secs: float) -> list[str]:
    """benchmark_model's command line: XNNPACK on, peak memory monitored."""
    return [
        binary, f"--graph={graph}", f"--num_threads={threads}", f"--num_runs={runs}", f"--warmup_runs={warmup}",
        f"--min_secs={min_secs:g}", "--use_xnnpack=true", "--report_peak_memory_footprint=true",
    ]


class AdbDevice:
    """One phone (the only one attached, or the given serial)."""

    python = False

    def __init__(
        self, serial: str | None = None, benchmark_model: str | None = None, adb: str | None = None, remote_root: str = REMOTE_ROOT
    ) -> None:
        self.serial = serial
        self.name = f"adb:{serial}" if serial else "adb"
        self.adb = adb or os.environ.get("ADB", "adb")
        self.remote_root = remote_root
        self._binary_spec = benchmark_model
        self._binary: str | None = None
        self._stamp: dict[str, Any] | None = None

    def _cmd(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def _check(self, argv: list[str], timeout: float = 120.0) -> str:
        rc, out, err = run_command(argv, timeout)
        if rc == 127:
            raise DeviceError(f"{self.adb}: not found; install Android platform-tools (adb) or set $ADB")
        if rc != 0:
            raise DeviceError(
                f"{' '.join(argv[:4])}: exit {rc}: {(err or out).strip()[:300]} (is the phone attached with USB debugging on? `adb "
                "devices`)"
            )
        return out

    def _shell(self, command: list[str], timeout: float = 120.0) -> tuple[int, str, str]:
        return run_command(self._cmd("shell", " ".join(shlex.quote(c) for c in command)), timeout)

    def _getprop(self, key: str) -> str | None:
        rc, out, _ = self._shell(["getprop", key], 30)
        return out.strip() or None if rc == 0 else None

    def stamp(self) -> dict[str, Any]:
        if self._stamp is None:
            rc, cores, _ = self._shell(["cat", "/sys/devices/system/cpu/possible"], 30)
            self._stamp = {
                "device": f"{self.name} {self._getprop('ro.product.model') or ''}".strip(),
                "arch": self._getprop("ro.product.cpu.abi"),
                "cpu_model": self._getprop("ro.soc.model") or self._getprop("ro.board.platform"),
                "cores": _count_cpus(cores) if rc == 0 else None,
                "os": f"Android {self._getprop('ro.build.version.release') or '?'}",
                "emulated": self._getprop("ro.kernel.qemu") == "1",
            }
        return self._stamp

    def push(self, local_dir: Path) -> str:
        """Push the .tflite files under local_dir (same relative paths) and benchmark_model."""
        if not self._binary_spec:
            raise DeviceError("adb devices need LiteRT's benchmark_model: pass --benchmark-model PATH (host file or path on the phone)")
        remote = f"{self.remote_root}/run"
        files = sorted(p for p in Path(local_dir).rglob("*.tflite") if p.is_file())
        dirs = sorted({f"{remote}/{p.parent.relative_to(local_dir).as_posix()}".rstrip("/.") for p in files} | {remote})
        self._check(self._cmd("shell", "mkdir -p " + " ".join(shlex.quote(d) for d in dirs)))
        for p in files:
            self._check(self._cmd("push", str(p), f"{remote}/{p.relative_to(local_dir).as_posix()}"), 600)
        self._binary = self._install_binary()
        return remote

    def _install_binary(self) -> str:
        spec = self._binary_spec
        if not spec:
            raise DeviceError("adb devices need LiteRT's benchmark_model: pass --benchmark-model PATH (host file or path on the phone)")
        if Path(spec).is_file():
            dest = f"{self.remote_root}/benchmark_model"
            self._check(self._cmd("push", spec, dest), 600)
            self._check(self._cmd("shell", f"chmod 755 {shlex.quote(dest)}"))
            return dest
        return spec  # already on the phone

    def run(self, argv: list[str], timeout: float) -> tuple[int, str, str]:
        return self._shell(argv, timeout)

    def run_python(self, args: list[str], timeout: float) -> tuple[int, str, str]:
        return 127, "", "adb devices run benchmark_model, not Python"

    def benchmark_model(
        self, graph: str, threads: int, runs: int, warmup: int, min_secs: float = 1.0, timeout: float = 900.0
    ) -> dict[str, Any]:
        """Run benchmark_model on one pushed .tflite file; parsed numbers (ms, MB)."""
        if self._binary is None:
            self._binary = self._install_binary()
        rc, out, err = self.run(benchmark_model_args(self._binary, graph, threads, runs, warmup, min_secs), timeout)
        res = parse_benchmark_output(out + "\n" + err)
        if rc != 0 and res.get("ok"):
            res["note"] = f"benchmark_model exited {rc}"
        if rc != 0 and not res.get("ok"):
            res["error"] = f"{res.get('error')} (exit {rc})"
        return res

    def pull(self, remote_path: str, local_path: Path) -> None:
        self._check(self._cmd("pull", remote_path, str(local_path)), 600)

    def close(self) -> None:
        """Remove what this device pushed (only our own directory under /data/local/tmp)."""
        run_command(self._cmd("shell", f"rm -rf {shlex.quote(self.remote_root + '/run')}"), 60)


def _count_cpus(possible: str) -> int | None:
    """'0-7' or '0-3,6-7' -> number of CPUs."""
    total = 0
    for part in possible.strip().split(","):
        lo, _, hi = part.partition("-")
        if not lo.strip().isdigit():
            return None
        total += (int(hi) - int(lo) + 1) if hi else 1
    return total or None


def open_device(spec: DeviceSpec, **options: Any) -> AdbDevice:
    return AdbDevice(spec.serial, benchmark_model=options.get("benchmark_model"), adb=options.get("adb"))
