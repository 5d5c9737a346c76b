"""The bundle's golden-vector suite (device_tests/) run on the device being measured.

Why: a file that loads and times fine can still compute other answers on the device's kernels;
the suite checks every file against the host's logits within the bundle's tolerance. One pytest
run per runtime; each file gets passed / failed / skipped counts and a verdict. A file whose
golden-vector test did not run (runtime missing, everything skipped) fails: a suite that checked
nothing must not read as a pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from benchmarks.devices.base import Device, DeviceError
from benchmarks.devices.scratch import scratch_dir

RUNTIME_FORMAT = {"onnxruntime": "onnx", "litert": "tflite", "tflite-runtime": "tflite"}
GOLDEN_TEST = "test_golden_vectors"
_NODE = re.compile(r"::(?P<test>\w+)(?:\[(?P<param>.*)\])?$")


def run_suite(device: Device, bundle: Path, runtimes: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """runtime -> the suite's JSON report on this device (or {"error": why})."""
    from benchmarks.devices.suite import run_device_tests

    out: dict[str, dict[str, Any]] = {}
    for rt in runtimes:
        with scratch_dir("suiteout") as tmp:
            try:
                out[rt] = run_device_tests(device, bundle, tmp, timeout, ("--runtime", rt))
            except (DeviceError, OSError, ValueError) as err:  # no report, or an unreadable one: the verdict says so
                out[rt] = {"error": f"device_tests: {err}", "tests": []}
    return out


def file_verdicts(report: dict[str, Any], variants: list[dict[str, Any]], runtime: str) -> dict[str, dict[str, Any]]:
    """file name -> {passed, failed, skipped, verdict, why} for the files this runtime runs."""
    fmt = RUNTIME_FORMAT.get(runtime)
    by_name = {str(v.get("name", v.get("file"))): v for v in variants if v.get("format") == fmt and v.get("file")}
    out: dict[str, dict[str, Any]] = {}
    for v in by_name.values():
        out[v["file"]] = {"passed": 0, "failed": 0, "skipped": 0, "golden": None, "why": []}
    for t in report.get("tests") or []:
        m = _NODE.search(str(t.get("test", "")))
        if not m or m.group("param") not in by_name:
            continue
        entry = out[by_name[m.group("param")]["file"]]
        outcome = "failed" if t.get("outcome") in ("failed", "error") else t.get("outcome")
        if outcome in ("passed", "failed", "skipped"):
            entry[outcome] += 1
        if m.group("test") == GOLDEN_TEST:
            entry["golden"] = outcome
        if outcome != "passed" and t.get("message"):
            entry["why"].append(f"{m.group('test')}: {_last_line(t['message'])}")
    for entry in out.values():
        if report.get("error"):
            entry["verdict"], entry["why"] = "fail", [str(report["error"])[:300]]
        elif entry["failed"]:
            entry["verdict"] = "fail"
        elif entry["golden"] != "passed":
            entry["verdict"] = "fail"
            entry["why"].insert(0, "golden vectors did not run here (every check skipped is not a pass)")
        else:
            entry["verdict"] = "pass"
        entry["why"] = entry["why"][:4]
    return out


def device_verdict(report: dict[str, Any]) -> str:
    """pass / fail for one suite run: failures, an error, or nothing but skips fail it."""
    counts = report.get("counts") or {}
    if report.get("error") or counts.get("failed") or counts.get("error"):
        return "fail"
    return "pass" if counts.get("passed") else "fail"


def merge(verdicts: dict[str, dict[str, Any]], files: list[str]) -> dict[str, Any] | None:
    """One target's (possibly several bucket files') verdicts as one."""
    got = [verdicts[f] for f in files if f in verdicts]
    if not got:
        return None
    return {
        "passed": sum(v["passed"] for v in got), "failed": sum(v["failed"] for v in got), "skipped": sum(v["skipped"] for v in got),
        "verdict": "fail" if any(v["verdict"] != "pass" for v in got) else "pass", "why": [w for v in got for w in v["why"]][:4],
    }


def _last_line(text: str) -> str:
    """pytest's `E ...` assertion line when there is one (the last line is only the location)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    errors = [ln[1:].strip() for ln in lines if ln.startswith("E ")]
    return (errors[0] if errors else lines[-1] if lines else "")[:200]
