"""Answers on other devices: the seeded row sample, the comparison with the host's run, the
device_tests verdicts (every check skipped is a failure) and the matrix's flags and diagnoses.
Pure functions over made-up child outputs: no device, same verdict on any host CPU."""

from __future__ import annotations

import numpy as np

from benchmarks import arm_matrix, device_suite, fidelity
from benchmarks.harness import flag_rows


def make_inputs(path, n=50):
    ids = np.arange(n * 8, dtype=np.int64).reshape(n, 8)
    np.savez(path, input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids),
             lengths=np.full(n, 8), labels=np.arange(n) % 2)
    return path


def test_sample_is_seeded_sorted_and_sized(tmp_path):
    src = make_inputs(tmp_path / "in.npz")
    assert fidelity.sample_size(None, True, 872) == 200 and fidelity.sample_size(None, False, 872) == 872
    assert fidelity.sample_size(0, True, 872) == 872 and fidelity.sample_size(300, False, 100) == 100
    a = dict(np.load(fidelity.sample_inputs(src, 10, 3, tmp_path / "a.npz")))
    b = dict(np.load(fidelity.sample_inputs(src, 10, 3, tmp_path / "b.npz")))
    c = dict(np.load(fidelity.sample_inputs(src, 10, 4, tmp_path / "c.npz")))
    assert a["row_index"].tolist() == b["row_index"].tolist() != c["row_index"].tolist()
    assert a["row_index"].tolist() == sorted(a["row_index"].tolist()) and len(a["labels"]) == 10
    assert (a["input_ids"][:, 0] // 8).tolist() == a["row_index"].tolist()  # every array follows the sample
    assert fidelity.sample_inputs(src, 50, 3, tmp_path / "d.npz") == src  # all rows: the inputs as they are


def test_compare_with_host_lists_the_rows_that_differ():
    data = {"labels": np.array([0, 1, 1, 0]), "row_index": np.array([3, 7, 9, 12])}
    dev = {"ok": True, "preds_real": [0, 1, 0, 0], "logits_real": [[1, 0], [0, 1], [0.6, 0.4], [1, 0]]}
    host = {"ok": True, "preds_real": [0, 1, 1, 0], "logits_real": [[1, 0], [0, 1], [0.4, 0.6], [1, 0]], "runtime_version": "x"}
    out = fidelity.compare_with_host(dev, host, data)
    assert out["host_agreement"] == 0.75 and out["host_accuracy"] == 1.0 and abs(out["host_max_abs_diff"] - 0.2) < 1e-9
    assert out["disagreements"] == [{"row": 9, "label": 1, "host": 1, "device": 0, "max_abs_diff": 0.2}]
    assert "host_error" in fidelity.compare_with_host(dev, {"ok": False, "error": "boom"}, data)
    metrics = fidelity.device_metrics(dev["preds_real"], data)
    assert metrics["preds_real"] == "0100" and metrics["sample_rows"] == [3, 7, 9, 12] and 0 < metrics["macro_f1"] < 1


VARIANTS = [{"name": "onnx-int8", "file": "a.onnx", "format": "onnx"}, {"name": "tfl", "file": "b.tflite", "format": "tflite"}]


def report(*tests, error=None):
    out = {"tests": [{"test": f"device_tests/test_bundle.py::{t}[{p}]", "outcome": o, "message": m} for t, p, o, m in tests]}
    out["counts"] = {}
    for t in out["tests"]:
        out["counts"][t["outcome"]] = out["counts"].get(t["outcome"], 0) + 1
    if error:
        out["error"] = error
    return out


def test_device_tests_verdicts_count_skips_as_failures():
    ok = report(("test_model_loads", "onnx-int8", "passed", ""), ("test_golden_vectors", "onnx-int8", "passed", ""))
    assert device_suite.file_verdicts(ok, VARIANTS, "onnxruntime") == {
        "a.onnx": {"passed": 2, "failed": 0, "skipped": 0, "golden": "passed", "why": [], "verdict": "pass"}
    }
    skipped = report(
        ("test_file_present_and_sha256", "onnx-int8", "passed", ""), ("test_golden_vectors", "onnx-int8", "skipped", "runtime unavailable")
    )
    got = device_suite.file_verdicts(skipped, VARIANTS, "onnxruntime")["a.onnx"]
    assert got["verdict"] == "fail" and "skipped" in got["why"][0]
    bad = report(("test_golden_vectors", "tfl", "failed", "AssertionError\nmax |logit diff| 2 > atol 0.1"))
    got = device_suite.file_verdicts(bad, VARIANTS, "litert")["b.tflite"]
    assert got["verdict"] == "fail" and got["why"] == ["test_golden_vectors: max |logit diff| 2 > atol 0.1"]
    assert device_suite.device_verdict(report(("test_golden_vectors", "tfl", "skipped", ""))) == "fail"
    assert device_suite.device_verdict(ok) == "pass"
    assert device_suite.file_verdicts(report(error="no report"), VARIANTS, "litert")["b.tflite"]["verdict"] == "fail"


def row(device, cpu, variant, precision, agreement, preds, diff=0.0, fmt="onnx", isa=None):
    return {
        "device": device,
        "runtime": "onnxruntime",
        "variant": variant,
        "precision": precision,
        "format": fmt,
        "files": [variant],
        "host_agreement": agreement,
        "host_max_abs_diff": diff,
        "host_disagreements": round((1 - agreement) * len(preds)),
        "preds_real": preds,
        "accuracy": 0.8,
        "min_agreement": 0.99,
        "device_tests": {"verdict": "pass", "passed": 3, "failed": 0, "skipped": 0, "why": []},
        "stamp": {"qemu_cpu": cpu, "qemu": "qemu-aarch64 version 7.2.22", "isa": isa or {"dotprod": cpu != "cortex-a53"}},
    }


def test_matrix_flags_files_whose_answers_change_with_the_cpu():
    rows = [
        row("q:a53", "cortex-a53", "onnx-int8", "int8-dynamic", 1.0, "0101"),
        row("q:n1", "neoverse-n1", "onnx-int8", "int8-dynamic", 0.75, "0100"),
        row("q:a53", "cortex-a53", "onnx-int8-static", "int8-static", 1.0, "0101"),
        row("q:n1", "neoverse-n1", "onnx-int8-static", "int8-static", 1.0, "0101"),
    ]
    header, body = arm_matrix.matrix_table(rows)
    flags = {b[0]: b[-1] for b in body}
    assert flags == {"onnx-int8": "kernel-dependent", "onnx-int8-static": ""}
    assert "flag" in header[-1] and any("cortex-a53" in h for h in header)
    assert "differs-from-host" in flag_rows([dict(rows[1])], 0.15)[0]["flags"]
    assert "differs-from-host" not in flag_rows([dict(rows[1], min_agreement=0.0)], 0.15)[0]["flags"]  # no limit binds


def test_diagnosis_tells_emulator_faults_from_kernel_paths():
    int8_bad = row("q:n1", "neoverse-n1", "onnx-int8", "int8-dynamic", 0.5, "0000")
    fp32_ok = row("q:n1", "neoverse-n1", "onnx-fp32", "fp32", 1.0, "0101", diff=1e-6)
    assert "int8 kernel path or this qemu" in arm_matrix.diagnose(int8_bad, [int8_bad, fp32_ok])
    litert_ok = dict(row("q:n1", "neoverse-n1", "onnx-int8", "int8-dynamic", 1.0, "0101"), runtime="litert")
    assert "onnxruntime's own kernels: litert runs the same file" in arm_matrix.diagnose(int8_bad, [int8_bad, fp32_ok, litert_ok])
    fp32_bad = row("q:n1", "neoverse-n1", "onnx-fp32", "fp32", 0.5, "0000", diff=2.0)
    assert "emulator fault" in arm_matrix.diagnose(int8_bad, [int8_bad, fp32_bad])
    sme = row("q:max", "max", "onnx-int8", "int8-dynamic", 0.5, "0000")
    no_sme = row("q:max-nosme", "max,sme=off", "onnx-int8", "int8-dynamic", 1.0, "0101")
    fp32_max = row("q:max", "max", "onnx-fp32", "fp32", 1.0, "0101", diff=1e-6)
    assert "known wrong" in arm_matrix.diagnose(sme, [sme, no_sme, fp32_max])  # qemu 7.2: a forced SME run
    for r in (sme, no_sme, fp32_max):
        r["stamp"]["qemu"] = "qemu-aarch64 version 10.0.3"
    assert "SME path" in arm_matrix.diagnose(sme, [sme, no_sme, fp32_max])
    assert arm_matrix.diagnose(no_sme, [no_sme]) is None
    titles = [t for t, _, _ in arm_matrix.sections([int8_bad, fp32_ok])]
    assert titles[0].startswith("Answers on each device") and "matrix" in titles[1] and len(titles) == 2  # no disagreeing rows listed


def test_bench_exit_counts_a_failed_device_suite():
    from benchmarks.harness import failed_files

    ok = {"variant": "m", "device": "d", "runtime": "onnxruntime", "device_tests": {"verdict": "pass", "why": []}}
    bad = dict(ok, device_tests={"verdict": "fail", "why": ["golden vectors did not run here"]})
    assert failed_files([ok]) == {}
    assert "golden vectors did not run" in failed_files([bad])["m"]
