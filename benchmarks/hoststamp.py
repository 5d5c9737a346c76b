"""What machine a measurement ran on: CPU model, the ISA features that decide which int8 kernels
run (an int8 MatMul takes another path with VNNI, AMX or ARM dot-product than with plain AVX2 or
NEON, so the same file gives other speeds and even other logits), cores, OS, library versions.

Standard library only, no project imports: measure.py ships this file to devices that have only
numpy and a runtime, and the ssh device runs this file's source with `python3 -c`.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
from typing import Any

CPUINFO = "/proc/cpuinfo"
# feature we report -> the /proc/cpuinfo flag that shows it
X86_FEATURES = {"avx2": "avx2", "avx512f": "avx512f", "avx512_vnni": "avx512_vnni", "avx_vnni": "avx_vnni", "amx_int8": "amx_int8"}
ARM_FEATURES = {"asimd": "asimd", "dotprod": "asimddp", "i8mm": "i8mm", "sve": "sve", "sme": "sme"}
MODEL_KEYS = ("model name", "Hardware", "Processor", "cpu model")
LIBRARIES = ("numpy", "onnxruntime", "ai-edge-litert", "tflite-runtime", "tensorflow", "torch", "transformers", "onnx")


def read_cpuinfo(path: str = CPUINFO) -> str:
    """The text of /proc/cpuinfo, or "" where there is none (macOS, Windows, a locked-down phone)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return ""


def _fields(cpuinfo: str) -> dict[str, str]:
    """The first value of every key (the first processor's block; they repeat per core)."""
    out: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out.setdefault(key.strip(), value.strip())
    return out


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's name: `model name` (x86), `Hardware`/`Processor` (older ARM kernels), else the ARM
    implementer and part numbers (arm64 kernels print no name), else platform.processor()."""
    fields = _fields(read_cpuinfo() if cpuinfo is None else cpuinfo)
    for key in MODEL_KEYS:
        if fields.get(key):
            return fields[key]
    if fields.get("CPU implementer") and fields.get("CPU part"):
        return f"ARM implementer {fields['CPU implementer']} part {fields['CPU part']}"
    return platform.processor() or None


def cpu_features(cpuinfo: str | None = None, arch: str | None = None) -> dict[str, bool] | None:
    """Which of the int8-relevant ISA features the CPU reports, each true or false; None when the
    flags cannot be read (an absent feature and an unknown one must not look the same)."""
    fields = _fields(read_cpuinfo() if cpuinfo is None else cpuinfo)
    arch = (arch or platform.machine()).lower()
    arm = arch.startswith(("aarch64", "arm"))
    line = fields.get("Features") if arm else fields.get("flags")
    if line is None:
        return None
    present = set(line.split())
    wanted = ARM_FEATURES if arm else X86_FEATURES
    return {name: flag in present for name, flag in wanted.items()}


def usable_cores() -> int | None:
    """Cores this process may run on (a container or taskset can allow fewer than cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of the libraries that shape a number; absent ones are left out."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def host_stamp(cpuinfo: str | None = None) -> dict[str, Any]:
    """Everything above for the machine this process runs on, as one JSON-ready dict."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    libs = library_versions()
    return {
        "arch": platform.machine(),
        "cpu_model": cpu_model(text),
        "isa": cpu_features(text),
        "cores": os.cpu_count(),
        "cores_usable": usable_cores(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": libs.get("numpy"),
        "libraries": libs,
    }


def describe(stamp: dict[str, Any]) -> str:
    """One line for a report: arch, CPU model, cores, OS and ISA flags of a stamp."""
    return (f"{stamp.get('arch', platform.machine())} {stamp.get('cpu_model')} ({stamp.get('cores')} cores, {stamp.get('os')}; "
            f"ISA {stamp.get('isa')})")
