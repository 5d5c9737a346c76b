"""adb device: parsing recorded LiteRT benchmark_model output, and the adb command lines the
harness builds, checked against a fake `adb` that logs its arguments (no phone here).

The recorded outputs in tests/data reproduce benchmark_model's published line formats (plain,
Android logcat-prefixed, an old build without medians, an op-version failure); their numbers
are format samples, not measurements of albert-edge models."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.devices.adb import benchmark_model_args, parse_benchmark_output
from benchmarks.devices.base import get_device
from benchmarks.harness import BenchConfig, Target, run_on_device

DATA = Path(__file__).parent / "data"


def _recorded(name: str) -> str:
    return (DATA / f"benchmark_model_{name}.txt").read_text()


def test_parse_xnnpack_output():
    r = parse_benchmark_output(_recorded("xnnpack"))
    assert r["ok"] and r["load_ms"] == pytest.approx(6.395) and r["first_ms"] == pytest.approx(2.761)
    assert r["warmup_mean_ms"] == pytest.approx(3.24358) and r["mean_ms"] == pytest.approx(2.94227)
    assert r["runs"] == 337 and r["warmup_runs"] == 153  # the last count= line is the timed run
    assert (r["min_ms"], r["max_ms"], r["std_ms"]) == pytest.approx((2.605, 20.356, 1.19))
    assert (r["p5_ms"], r["p50_ms"], r["p95_ms"]) == pytest.approx((2.647, 2.781, 3.169))
    assert r["cv"] == pytest.approx(1.19 / 2.94227)
    assert (r["rss_init_mb"], r["rss_growth_mb"], r["rss_peak_mb"]) == pytest.approx((39.4531, 40.8281, 93.2383))
    assert r["model_size_mb"] == pytest.approx(13.9193) and r["threads"] == 4


def test_parse_logcat_and_scientific_notation():
    r = parse_benchmark_output(_recorded("logcat"))
    assert r["ok"] and r["mean_ms"] == pytest.approx(2719.85) and r["warmup_mean_ms"] == pytest.approx(2732.15)
    assert r["runs"] == 10 and r["p50_ms"] == pytest.approx(2709.263)
    assert r["rss_growth_mb"] == pytest.approx(337.0) and "rss_peak_mb" not in r


def test_parse_old_build_without_median_or_memory():
    r = parse_benchmark_output(_recorded("old"))
    assert r["ok"] and r["mean_ms"] == pytest.approx(210.028) and r["runs"] == 50 and r["warmup_runs"] == 3
    assert "p50_ms" not in r
    assert "rss_growth_mb" not in r  # "init=0 overall=0": the old tool could not measure; not 0 MB


def test_parse_failure_says_why():
    r = parse_benchmark_output(_recorded("error"))
    assert r["ok"] is False and "FULLY_CONNECTED" in r["error"]
    assert parse_benchmark_output("")["error"] == "benchmark_model printed no timing summary"


def test_benchmark_model_command_line():
    assert benchmark_model_args("/data/local/tmp/bm", "/data/local/tmp/m.tflite", 4, 50, 2, 1.0) == [
        "/data/local/tmp/bm", "--graph=/data/local/tmp/m.tflite", "--num_threads=4", "--num_runs=50", "--warmup_runs=2",
        "--min_secs=1", "--use_xnnpack=true", "--report_peak_memory_footprint=true",
    ]


FAKE_ADB = """#!{python}
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as fh:
    fh.write(json.dumps(args) + "\\n")
cmd = " ".join(args)
props = {{"ro.product.model": "Pixel 7", "ro.product.cpu.abi": "arm64-v8a", "ro.soc.model": "Tensor G2", "ro.build.version.release": "14"}}
if "getprop" in cmd:
    print(props.get(cmd.split()[-1], ""))
elif "/sys/devices/system/cpu/possible" in cmd:
    print("0-7")
elif "--graph=" in cmd:
    sys.stdout.write(open({output!r}).read())
    sys.exit(1 if "error" in {output!r} else 0)
"""


def _fake_adb(tmp_path: Path, recorded: str) -> tuple[Path, Path]:
    log = tmp_path / "adb.log"
    script = tmp_path / "adb"
    script.write_text(FAKE_ADB.format(python=sys.executable, log=str(log), output=str(DATA / f"benchmark_model_{recorded}.txt")))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return script, log


def _bundle(tmp_path: Path) -> tuple[list[Target], Path]:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "m-int8.tflite").write_bytes(b"TFL3" + b"\0" * 64)
    (tmp_path / "b" / "m.onnx").write_bytes(b"\0" * 64)
    ids = np.ones((2, 8), dtype=np.int64)
    np.savez(tmp_path / "in.npz", input_ids=ids, attention_mask=ids, token_type_ids=ids * 0, lengths=np.full(2, 8))
    targets = [Target("m-int8", "tflite", "int8-dynamic", [tmp_path / "b" / "m-int8.tflite"], {}),
               Target("m", "onnx", "fp32", [tmp_path / "b" / "m.onnx"], {})]
    return targets, tmp_path / "in.npz"


def test_adb_device_pushes_runs_and_parses(tmp_path):
    adb, log = _fake_adb(tmp_path, "xnnpack")
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(b"\x7fELF")
    device = get_device("adb:R5CT30", benchmark_model=str(binary), adb=str(adb))
    targets, inputs = _bundle(tmp_path)
    cfg = BenchConfig(devices=("adb:R5CT30",), threads=(4,), runs=50, warmup=2, runtimes=("litert", "onnxruntime"))
    rows = run_on_device(device, targets, inputs, cfg, {"artifact": "b"})
    device.close()
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c[:2] == ["-s", "R5CT30"] for c in calls)
    pushes = [c[2:] for c in calls if c[2] == "push"]
    assert [p[2] for p in pushes] == [
        "/data/local/tmp/albert-edge/run/models/0-0-m-int8.tflite",
        "/data/local/tmp/albert-edge/benchmark_model",
    ]
    assert not any(p[1].endswith(".onnx") for p in pushes)  # only .tflite files go to the phone
    run = next(c for c in calls if "--graph=" in " ".join(c))
    assert (
        run[2] == "shell"
        and "/data/local/tmp/albert-edge/benchmark_model --graph=/data/local/tmp/albert-edge/run/models/0-0-m-int8.tflite" in run[3]
    )
    assert "--num_threads=4 --num_runs=50 --warmup_runs=2" in run[3]
    assert calls[-1][2:] == ["shell", "rm -rf /data/local/tmp/albert-edge/run"]
    tfl = next(r for r in rows if r["variant"] == "m-int8")
    assert tfl["source"] == "benchmark_model" and tfl["error"] is None
    assert tfl["p50_ms"] == pytest.approx(2.781) and tfl["mean_ms"] == pytest.approx(2.94227) and tfl["runs"] == 337
    assert tfl["load_ms"] == pytest.approx(6.395) and tfl["rss_peak_mb"] == pytest.approx(93.2383)
    assert tfl["stamp"]["device"] == "adb:R5CT30 Pixel 7" and tfl["stamp"]["arch"] == "arm64-v8a"
    assert tfl["stamp"]["cores"] == 8 and tfl["stamp"]["os"] == "Android 14" and tfl["emulated"] is False
    onnx_row = next(r for r in rows if r["variant"] == "m")
    assert "runs only .tflite" in onnx_row["error"]


def test_adb_failure_becomes_an_error_row(tmp_path):
    adb, _ = _fake_adb(tmp_path, "error")
    device = get_device("adb", benchmark_model="/data/local/tmp/benchmark_model", adb=str(adb))
    targets, inputs = _bundle(tmp_path)
    rows = run_on_device(device, targets[:1], inputs, BenchConfig(devices=("adb",), runtimes=("litert",)), {})
    assert len(rows) == 1 and "FULLY_CONNECTED" in rows[0]["error"] and rows[0]["batch"] is None
