"""The benchmark harness on a tiny bundle built by the real runner (ONNX + bucketed TFLite +
torch), one fresh child process per row; memory attribution; flags; the bench CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from benchmarks.devices.base import DeviceError, get_device, parse_spec
from benchmarks.harness import (
    BenchConfig,
    Target,
    benchmark,
    bundle_targets,
    cli_bench,
    encoded_to_npz,
    find_bundle,
    flag_rows,
    parse_child_output,
)
from tests.conftest import TINY_YAML, run_yaml, write_yaml

MEASURE = Path(__file__).resolve().parents[1] / "benchmarks" / "measure.py"
# the shared tiny pipeline (its teacher is reused from the session cache) plus export and bundle
BUNDLE_YAML = TINY_YAML + """\
  tiny-bundle:
    extends: tiny
    append:
      - export_onnx: {parity_rows: 16, timing_runs: 3, optimize: false}
      - export_tflite: {buckets: [32, 64], precisions: [fp32, int8-dynamic], parity_rows: 16}
      - bundle: {golden_rows: 8}
"""
FAST = {"runs": 5, "min_secs": 0.0, "warmup": 1, "warmup_min_secs": 0.0, "threads": (1,), "seq_lens": (32, 64), "timeout_s": 300.0}


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, tiny_cache, tiny_teacher):
    """A bundle with onnx-fp32, tflite-fp32 and tflite-int8-dynamic (buckets 32, 64); its run."""
    y = write_yaml(tmp_path_factory.mktemp("bundle-yaml") / "p.yaml", BUNDLE_YAML)
    res = run_yaml(y, "tiny-bundle", tiny_cache)
    assert res.exit_code == 0, res.error
    return res


def _eval_npz(bundle: Path, tmp: Path, teacher) -> Path:
    """The eval split tokenised with the bundle's tokenizer, teacher predictions attached."""
    from transformers import AutoTokenizer

    from albert_edge.data import TaskConfig, encode, read_examples
    from albert_edge.metrics import load_predictions

    task = TaskConfig(max_eval_rows=120, max_seq_len=64)
    enc = encode(AutoTokenizer.from_pretrained(str(bundle)), read_examples(task, "eval"), 64)
    return encoded_to_npz(enc.input_ids, enc.token_type_ids, enc.labels, tmp / "inputs.npz", load_predictions(teacher.path))


def _host_accuracy(path: Path, npz: Path) -> float:
    """Accuracy computed here, in-process, at real lengths: what the child must report."""
    from edge_runtime import open_model

    data = np.load(npz)
    m = open_model(str(path), threads=1)
    preds = [
        int(m(data["input_ids"][i : i + 1, :n], data["attention_mask"][i : i + 1, :n], data["token_type_ids"][i : i + 1, :n])[0].argmax())
        for i, n in enumerate(data["lengths"])
    ]
    return float((np.asarray(preds) == data["labels"]).mean())


def test_harness_every_runtime(tiny_bundle, tiny_teacher, tmp_path):
    bundle = find_bundle(tiny_bundle.run_dir)
    targets = bundle_targets(bundle) + [Target("torch-eager", "torch", "fp32", [tiny_teacher.model_dir], {})]
    npz = _eval_npz(bundle, tmp_path, tiny_teacher)
    cfg = BenchConfig(batch_sizes=(1, 2), **FAST)
    rows = benchmark(targets, npz, cfg, {"artifact": "bundle"})
    ok = [r for r in rows if not r["error"]]
    by_rt = {r["runtime"] for r in ok}
    assert {"onnxruntime", "litert", "torch"} <= by_rt, rows
    # tflite-runtime is either measured or reported unavailable, never a crash
    for r in rows:
        if r["runtime"] == "tflite-runtime" and r["error"]:
            assert r["error"].startswith("runtime unavailable:"), r["error"]
    # every file is also timed over the eval rows at their real lengths
    assert {r["variant"] for r in ok if r["seq_len"] == "real"} == {r["variant"] for r in ok}
    for r in ok:
        assert r["runs"] >= 5 and len(r["times_ms"]) == r["runs"]
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["cv"] >= 0 and r["throughput_per_s"] > 0 and r["load_ms"] > 0 and r["first_ms"] > 0
        assert r["rss_peak_mb"] >= r["rss_baseline_mb"] > 0
        assert r["size_bytes"] > r["gzip_bytes"] > 0
        for key in ("device", "arch", "cpu_model", "cores", "os", "emulated"):
            assert key in r["stamp"]
        assert r["threads"] == 1 and r["runtime_version"]
        assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["agreement"] <= 1.0
    shapes = {(r["variant"], r["runtime"], r["batch"], r["seq_len"]) for r in ok}
    assert ("tflite-fp32", "litert", 2, 64) in shapes and ("onnx-fp32", "onnxruntime", 1, 32) in shapes
    tfl = next(r for r in ok if r["variant"] == "tflite-fp32" and r["seq_len"] == 64)
    assert tfl["seq_buckets"] == [32, 64] and tfl["run_seq_len"] == 64
    assert "128" not in tfl["accuracy_fixed"] or tfl["accuracy_fixed"]["128"] is None  # no 128 bucket: not faked
    # the child's accuracy is the one computed here in-process through edge_runtime
    for name in ("onnx-fp32", "tflite-fp32"):
        row = next(r for r in ok if r["variant"] == name)
        assert row["accuracy"] == pytest.approx(_host_accuracy(bundle / row["files"][0], npz), abs=1e-9)


def test_child_peak_memory_is_its_own(tmp_path):
    """A child of a big process reports its own peak (not the parent's), and a model with more
    weights shows correspondingly more growth over the runtime's import baseline."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def model(path: Path, n: int) -> Path:
        w = numpy_helper.from_array(np.full((n, 2), 0.5, dtype=np.float32), "w")
        emb = helper.make_node("Gather", ["w", "input_ids"], ["e"])
        red = helper.make_node("ReduceMean", ["e"], ["logits"], axes=[1], keepdims=0)
        g = helper.make_graph([emb, red], "m", [helper.make_tensor_value_info(k, TensorProto.INT64, ["b", "s"]) for k in ("input_ids",)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], [w])
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
        return path

    small = model(tmp_path / "small.onnx", 1000)
    big = model(tmp_path / "big.onnx", 10_000_000)  # 80 MB of weights
    ids = np.random.default_rng(0).integers(0, 1000, (4, 16))
    np.savez(
        tmp_path / "in.npz", input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids), lengths=np.full(4, 16)
    )
    ballast = np.ones(300 * 1024 * 1024 // 8)  # 300 MB held by this (parent) process
    out = {}
    for name, path in (("small", small), ("big", big)):
        proc = subprocess.run([sys.executable, str(MEASURE), "--model", str(path), "--runtime", "onnxruntime", "--threads", "1", "--inputs",
                               str(tmp_path / "in.npz"), "--seq-len", "16", "--runs", "3", "--min-secs", "0", "--warmup-min-secs", "0"],
                              capture_output=True, text=True, check=False)
        out[name] = json.loads(proc.stdout)
        assert out[name]["ok"], proc.stderr
    assert ballast.sum() > 0
    assert out["small"]["rss_peak_mb"] < 250, "the child reported the parent's peak RSS"
    assert out["big"]["rss_growth_mb"] - out["small"]["rss_growth_mb"] > 60


def test_unavailable_runtime_is_a_row_not_a_crash(tmp_path):
    ids = np.ones((2, 8), dtype=np.int64)
    np.savez(tmp_path / "in.npz", input_ids=ids, attention_mask=ids, token_type_ids=ids * 0, lengths=np.full(2, 8))
    (tmp_path / "m.tflite").write_bytes(b"\0" * 64)
    proc = subprocess.run(
        [sys.executable, str(MEASURE), "--model", str(tmp_path / "m.tflite"), "--runtime", "tf.lite", "--inputs", str(tmp_path / "in.npz")],
        capture_output=True,
        text=True,
        check=False,
    )
    res = parse_child_output(proc.returncode, proc.stdout, proc.stderr)
    assert res["ok"] is False and res["error"].startswith("runtime unavailable:")
    res = parse_child_output(1, "", "Traceback ...\nMemoryError")
    assert res == {"ok": False, "error": "child exited 1: MemoryError"}


def _row(**kw):
    base = {"device": "d", "format": "tflite", "runtime": "litert", "threads": 2, "batch": 1, "seq_len": 128, "seq_buckets": [], "cv": 0.01}
    return {**base, **kw}


def test_flags_noise_and_int8_slower_than_fp32():
    rows = flag_rows([
        _row(variant="fp32", precision="fp32", p50_ms=10.0),
        _row(variant="int8", precision="int8-dynamic", p50_ms=12.0),
        _row(variant="int8b", precision="int8-dynamic", p50_ms=6.0, cv=0.4),
        _row(variant="int8c", precision="int8-dynamic", p50_ms=20.0, device="other"),  # no fp32 twin on that device
    ], cv_threshold=0.15)
    flags = {r["variant"]: r["flags"] for r in rows}
    assert flags["fp32"] == [] and flags["int8"] == ["int8-slower-than-fp32"]
    assert flags["int8b"] == ["noisy"] and rows[2]["speedup_vs_fp32"] == pytest.approx(10 / 6)
    assert flags["int8c"] == []


def test_device_specs():
    assert parse_spec("ssh://pi@board:2222").port == 2222 and parse_spec("adb:R5CT").serial == "R5CT"
    with pytest.raises(ValueError, match="unknown device"):
        parse_spec("bluetooth")
    with pytest.raises(ValueError, match="not a number"):
        parse_spec("ssh://pi@board:x")
    with pytest.raises(DeviceError, match="benchmark-model"):
        get_device("adb:X").push(Path("."))


def test_bench_cli(tiny_bundle, tmp_path, capsys):
    args = SimpleNamespace(
        bundle=tmp_path / "nope",
        device="local",
        threads=1,
        runs=3,
        warmup=1,
        seq_len=[32],
        runtimes="onnxruntime",
        out=tmp_path / "o",
        benchmark_model=None,
    )
    assert cli_bench(args) == 2
    args.bundle = tiny_bundle.run_dir
    assert cli_bench(SimpleNamespace(**{**vars(args), "device": "floppy"})) == 2
    assert cli_bench(args) == 0
    rows = [json.loads(x) for x in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert rows and {r["runtime"] for r in rows} == {"onnxruntime"} and {r["seq_len"] for r in rows} == {32, "real"}
    # the bundle carries eval.npz (the tokenised eval split): accuracy comes without a tokenizer
    assert all(isinstance(r["accuracy"], float) and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert "no eval.npz" not in capsys.readouterr().err
    # stamped with the bundle artifact it measured and the pipeline that built it (no config hash outside a run)
    assert {r["pipeline"] for r in rows} == {"tiny-bundle"} and {r["config_hash"] for r in rows} == {None}
    assert all(r["run_id"] and r["git_commit"] and r["artifact_keys"]["bundle"] for r in rows)


def test_dropped_device_keeps_rows_already_measured(tmp_path):
    """A device that drops mid-run: the rows measured before the drop survive, plus an error row."""
    from benchmarks.devices.base import DeviceError
    from benchmarks.harness import BenchConfig, Target, run_on_device

    onnx_files = []
    for i in range(2):
        f = tmp_path / f"m{i}.onnx"
        f.write_bytes(b"x" * 64)
        onnx_files.append(f)
    npz = tmp_path / "in.npz"
    np.savez(npz, input_ids=np.ones((2, 4), np.int64), attention_mask=np.ones((2, 4), np.int64),
             token_type_ids=np.zeros((2, 4), np.int64), lengths=np.array([4, 4]), labels=np.array([0, 1]))

    class Flaky:
        name, python = "flaky", True
        calls = 0

        def stamp(self):
            return {"device": "flaky", "arch": "aarch64"}

        def push(self, d):
            return str(d)

        def run_python(self, args, timeout):
            Flaky.calls += 1
            if Flaky.calls > 1:
                raise DeviceError("connection to flaky dropped")
            return 0, json.dumps({"ok": True, "runtime": "onnxruntime", "threads": 1, "load_ms": 1.0, "latency": []}), ""

        def close(self):
            pass

    targets = [Target(f"v{i}", "onnx", "fp32", [f], {}) for i, f in enumerate(onnx_files)]
    cfg = BenchConfig(runtimes=("onnxruntime",), threads=(1,))
    rows = run_on_device(Flaky(), targets, npz, cfg, {})
    assert rows[0]["variant"] == "v0" and not rows[0].get("error")
    assert len(rows) == 2
    assert "connection to flaky dropped" in rows[-1]["error"]
    assert Flaky.calls == 2


def test_unavailable_device_is_error_rows_not_a_lost_run(tmp_path, monkeypatch):
    """qemu-aarch64 not built: its rows say so; the local rows are still measured."""
    from benchmarks.harness import BenchConfig, Target, benchmark

    monkeypatch.setenv("ALBERT_EDGE_DEVICE_CACHE", str(tmp_path / "no-devices"))
    npz = tmp_path / "in.npz"
    np.savez(npz, input_ids=np.ones((2, 4), np.int64), attention_mask=np.ones((2, 4), np.int64),
             token_type_ids=np.zeros((2, 4), np.int64), lengths=np.array([4, 4]), labels=np.array([0, 1]))
    bogus = tmp_path / "m.onnx"
    bogus.write_bytes(b"not an onnx file at all")
    cfg = BenchConfig(devices=("local", "qemu-aarch64"), runtimes=("onnxruntime",), threads=(1,), runs=1, min_secs=0.0, warmup_min_secs=0.0)
    rows = benchmark([Target("m", "onnx", "fp32", [bogus], {})], npz, cfg, {})
    by_device = {r["device"].split(":")[0]: r for r in rows}
    assert "device unavailable" in by_device["qemu-aarch64"]["error"] and "qemu-aarch64" in by_device["qemu-aarch64"]["error"]
    assert "load failed" in by_device["local"]["error"]  # the local child ran (and said why the file is bad)
