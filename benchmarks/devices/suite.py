"""Run the on-device test suite (device_tests/) on any Python device and bring its JSON report back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from benchmarks.devices.base import REPO_ROOT, RUNTIME_PACKAGE, Device, DeviceError
from benchmarks.devices.scratch import scratch_dir

# Shipped beside the suite as `albert_edge_json_report` and loaded with `-p`: outcomes come back as JSON.
JSON_REPORT_PLUGIN = Path(__file__).with_name("pytest_json_report.py")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")


def _tail(text: str) -> str:
    return next((ln for ln in reversed(text.strip().splitlines()) if ln.strip()), "")[:300]


def run_device_tests(
    device: Device,
    bundle: Path,
    out_dir: Path,
    timeout: float = 1800.0,
    pytest_args: tuple[str, ...] = (),
    suite_dir: Path = REPO_ROOT / "device_tests",
) -> dict[str, Any]:
    """Push `bundle`, the device_tests suite and the edge_runtime package, run `python -m pytest device_tests --bundle DIR`
    on the device, pull its JSON report to out_dir/device-tests.json and return it (+ stamp).
    Works on any Python device (ssh, qemu-aarch64, local)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with scratch_dir("suite") as tmp:  # kept until the run ends: a local device runs in it
        payload = tmp / "suite"
        shutil.copytree(suite_dir, payload / "device_tests", ignore=_IGNORE)
        shutil.copytree(RUNTIME_PACKAGE, payload / RUNTIME_PACKAGE.name, ignore=_IGNORE)
        shutil.copy2(JSON_REPORT_PLUGIN, payload / "albert_edge_json_report.py")
        remote_suite = device.push(payload)
        bundle = Path(bundle)
        if not (bundle / "metadata.json").is_file() and (bundle / "bundle" / "metadata.json").is_file():
            bundle = bundle / "bundle"  # a bundle artifact directory: the files sit in bundle/
        remote_bundle = device.push(bundle)
        report = f"{remote_suite}/device-tests.json"
        code = (
            "import os, sys; sys.path.insert(0, sys.argv[1]); os.environ['ALBERT_EDGE_TEST_JSON'] = sys.argv[2]; os.chdir(sys.argv[1]); "
            "import pytest; sys.exit(pytest.main(sys.argv[3:]))"
        )
        rc, out, err = device.run_python(
            [
                "-c",
                code,
                remote_suite,
                report,
                "device_tests",
                "--bundle",
                remote_bundle,
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "albert_edge_json_report",
                *pytest_args,
            ],
            timeout,
        )
        local = out_dir / "device-tests.json"
        try:
            device.pull(report, local)
        except DeviceError as e:
            raise DeviceError(f"{device.name}: device_tests wrote no report (pytest exit {rc}): {_tail(err or out)}") from e
        result = json.loads(local.read_text())
        result.update({"returncode": rc, "stamp": device.stamp(), "output_tail": (out + err)[-4000:]})
        local.write_text(json.dumps(result, indent=1))
        return result

