"""The report: files present and non-empty, self-contained HTML, warnings for noisy rows and
int8-slower-than-fp32, CSV flattening; and the benchmark -> report stages through the runner."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np

from benchmarks.report import cli_report, pareto_front, write_report
from tests.conftest import run_yaml, write_yaml
from tests.test_harness import BUNDLE_YAML

PNG = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[dict]:
    rng = np.random.default_rng(0)
    stamp = {"device": "phone", "arch": "aarch64", "cpu_model": "Cortex-A76", "cores": 8, "os": "Linux", "emulated": False}

    def row(variant, precision, fmt, runtime, p50, acc, cv=0.02, size=4_000_000):
        times = list(np.round(rng.normal(p50, p50 * cv, 60), 4))
        return {"variant": variant, "precision": precision, "format": fmt, "runtime": runtime, "device": "phone", "stamp": stamp,
                "threads": 2, "batch": 1, "seq_len": 128, "seq_buckets": [], "p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3,
                "mean_ms": p50, "std_ms": p50 * cv, "cv": cv, "times_ms": times, "accuracy": acc, "agreement": 0.99,
                "accuracy_fixed": {"128": acc}, "size_bytes": size, "gzip_bytes": size // 2, "rss_peak_mb": 80.0, "error": None,
                "runtime_version": "2.3.0", "teacher_accuracy": 0.91}

    return [
        row("tflite-fp32", "fp32", "tflite", "litert", 10.0, 0.90),
        row("tflite-int8", "int8-dynamic", "tflite", "litert", 12.5, 0.89, size=1_100_000),  # slower than its fp32 twin
        row("onnx-fp32", "fp32", "onnx", "onnxruntime", 8.0, 0.90, cv=0.4),  # noisy
        row("onnx-int8", "int8-dynamic", "onnx", "onnxruntime", 5.0, 0.885, size=1_200_000),
        {
            **row("tflite-fp16", "fp16", "tflite", "tflite-runtime", 1.0, None),
            "error": "runtime unavailable: tflite-runtime is not installed",
            "p50_ms": None,
            "times_ms": None,
        },
    ]


def test_pareto_front():
    pts = [(10.0, 90.0), (12.5, 89.0), (8.0, 90.0), (5.0, 88.5), (20.0, 91.0)]
    assert pareto_front(pts) == [3, 2, 4]


def test_report_files(tmp_path):
    files = write_report(_rows(), tmp_path, "t", 0.15)
    for name in ("pareto.png", "sizes.png", "latency.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
    html = (tmp_path / "report.html").read_text()
    assert html.count("src='data:image/png;base64,") == 3 and "src='http" not in html and "src=\"" not in html
    md = (tmp_path / "report.md").read_text()
    assert "## phone / litert 2.3.0" in md and "## phone / onnxruntime" in md
    assert "int8 slower than fp32: tflite-int8 on phone / litert" in md and "0.80x the fp32 speed" in md
    assert "onnx-int8" not in md.split("Read this first")[1].split("## Plots")[0]  # faster int8: no warning
    assert "1 row(s) have a coefficient of variation over 0.15" in md
    assert "error: runtime unavailable: tflite-runtime is not installed" in md
    with (tmp_path / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and "stamp_cpu_model" in rows[0] and "times_ms" not in rows[0] and rows[0]["accuracy_fixed_128"]
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[1])["flags"] == ["int8-slower-than-fp32"]
    assert set(files) >= {"report.md", "report.html", "results.csv", "results.jsonl", "pareto.png"}


REPORT_YAML = BUNDLE_YAML.replace("tiny-bundle:", "tiny-report:") + """\
      - benchmark: {runs: 5, min_secs: 0.0, warmup: 1, warmup_min_secs: 0.0, threads: [1], seq_lens: [32], runtimes: [onnxruntime, litert]}
      - report
"""


def test_benchmark_and_report_stages_through_the_runner(tmp_path, tiny_cache, tiny_teacher):
    res = run_yaml(write_yaml(tmp_path / "p.yaml", REPORT_YAML), "tiny-report", tiny_cache)
    assert res.exit_code == 0, res.error
    bench, report = res.steps[-2], res.steps[-1]
    assert bench.artifact.kind == "bench" and report.artifact.kind == "report"
    rows = [json.loads(x) for x in (bench.artifact.path / "results.jsonl").read_text().splitlines()]
    assert {r["variant"] for r in rows} == {"onnx-fp32", "tflite-fp32", "tflite-int8-dynamic"}
    assert all(r["accuracy"] is not None and r["agreement"] is not None and r["random_weights"] for r in rows)
    assert report.metrics["rows"] == len(rows)
    for name in ("report.md", "report.html", "results.csv", "results.jsonl", "pareto.png", "sizes.png", "latency.png"):
        assert (report.artifact.path / name).stat().st_size > 0, name
    md = (report.artifact.path / "report.md").read_text()
    assert "RANDOM weights" in md
    # one run, stamped on every row: commit, pipeline and its config hash, the artifacts measured, the machine
    assert len({(r["run_id"], r["git_commit"], r["config_hash"]) for r in rows}) == 1 and {r["pipeline"] for r in rows} == {"tiny-report"}
    assert all(r["artifact_keys"]["bundle"] and isinstance(r["stamp"]["libraries"], dict) and "isa" in r["stamp"] for r in rows)
    assert all(len(r["correct_real"]) == 120 for r in rows)  # per-row correctness over the eval rows
    assert "| tflite-int8-dynamic | tflite-fp32 |" in md and f"run {rows[0]['run_id']}" in md
    # the CLI writes the same report from the run directory
    out = tmp_path / "cli-report"
    assert cli_report(SimpleNamespace(run=res.run_dir, out=out)) == 0
    assert (out / "pareto.png").read_bytes().startswith(PNG)
    assert cli_report(SimpleNamespace(run=tmp_path, out=None)) == 2


def test_int8_files_are_compared_with_their_fp32_twin_on_the_same_rows(tmp_path):
    rows = _rows()
    fp32 = "1" * 90 + "0" * 10
    int8 = "0" * 5 + "1" * 85 + "0" * 10  # 5 rows lost, none gained: -5 points
    for r in rows:
        if r["format"] == "onnx":
            r["correct_real"] = fp32 if r["precision"] == "fp32" else int8
        r.update(run_id="r1", git_commit="a" * 40, git_dirty=False, pipeline="smoke", config_hash="c" * 16)
    from benchmarks.report import paired_differences

    (d,) = paired_differences(rows)
    assert d["variant"] == "onnx-int8" and d["vs"] == "onnx-fp32" and d["diff_points"] == -5.0
    assert d["ci95_points"][1] < 0 and d["mcnemar_p"] == 2 / 32
    write_report(rows, tmp_path, "t", 0.15)
    md = (tmp_path / "report.md").read_text()
    assert "| phone | onnxruntime | onnx-int8 | onnx-fp32 | 88.50% | -5.00 [" in md
    assert "run r1, commit aaaaaaaaaaaa, pipeline smoke, config cccccccccccccccc: 5 rows" in md
    assert "correct_real" not in (tmp_path / "results.csv").read_text().splitlines()[0]
