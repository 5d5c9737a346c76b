"""The repo's `smoke` pipeline end to end through the CLI: every stage, a bundle that passes
device_tests, a report with its plots, and a second run that reuses everything."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from albert_edge.cli import main
from albert_edge.paths import REPO_ROOT


def test_smoke_pipeline_end_to_end(tmp_path):
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    assert main(["run", str(REPO_ROOT / "pipelines.yaml"), "-p", "smoke", "--cache-dir", str(cache)]) == 0
    elapsed = time.perf_counter() - t0
    run_dir = (cache / "runs" / "smoke-latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    stages = [s["stage"] for s in summary["steps"]]
    assert stages == [
        "finetune",
        "evaluate",
        "distill",
        "prune",
        "export_onnx",
        "export_tflite",
        "quantize",
        "bundle",
        "benchmark",
        "report",
    ]
    assert all(s["status"] == "built" for s in summary["steps"])
    arts = {s["step"]: s for s in summary["steps"]}
    assert arts["prune"]["metrics"]["params"] < arts["distill"]["metrics"]["params"] < arts["teacher"]["metrics"]["params"]
    report = next((cache / "artifacts").glob("report-*"))
    assert (report / "report.html").stat().st_size > 10_000 and (report / "report.md").is_file()
    assert all(p.stat().st_size > 1000 for p in report.glob("*.png")) and len(list(report.glob("*.png"))) >= 3
    bundle = next((cache / "artifacts").glob("bundle-*")) / "bundle"
    meta = json.loads((bundle / "metadata.json").read_text())
    assert meta["random_weights"] is True
    assert {v["format"] for v in meta["variants"]} == {"onnx", "tflite"}
    assert any(v["precision"].startswith("int8") for v in meta["variants"])
    # the bundle passes the on-device suite (here, locally)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO_ROOT / "device_tests"), "--bundle", str(bundle)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    # everything is reused on a second run
    assert main(["run", str(REPO_ROOT / "pipelines.yaml"), "-p", "smoke", "--cache-dir", str(cache)]) == 0
    again = json.loads(((cache / "runs" / "smoke-latest").resolve() / "summary.json").read_text())
    assert all(s["status"] == "reused" for s in again["steps"])
    print(f"smoke pipeline: {elapsed:.1f}s")
