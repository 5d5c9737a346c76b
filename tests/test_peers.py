"""benchmarks/peers: the pure-Python table and target logic (always runs), and each peer recipe on
the tiny session model in its own venv (marked `peers` and `slow`: CI deselects it, and it skips,
saying why, where the peer's venv was not set up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.peers import common


def test_host_isa_picks_the_ort_config_the_cpu_can_run() -> None:
    assert common.host_isa("fpu sse4_2 avx avx2 fma avx512f avx512bw avx512_vnni") == "avx512_vnni"
    assert common.host_isa({"avx2", "avx512f", "avx512bw"}) == "avx512"
    assert common.host_isa("sse4_2 avx avx2") == "avx2"
    assert common.host_isa("") == "avx2"


def test_read_peer_result_lists_files_and_reports_a_missing_record(tmp_path: Path) -> None:
    files, data = common.read_peer_result(tmp_path)
    assert files == [] and "no readable peer.json" in common.failure_text(data)
    (tmp_path / "m.onnx").write_bytes(b"x" * 32)
    (tmp_path / "peer.json").write_text(json.dumps({
        "peer": "optimum", "role": "student", "notes": ["route"], "errors": [],
        "files": [{"name": "optimum-O3-int8-avx2", "file": "m.onnx", "format": "onnx", "precision": "int8-dynamic", "tool_s": 1.5},
                  {"name": "optimum-O3-int8-arm64", "file": "m.onnx", "format": "onnx", "precision": "int8-dynamic", "arm_only": True}]}))
    files, _ = common.read_peer_result(tmp_path)
    assert [f.system for f in files] == ["optimum/student/optimum-O3-int8-avx2", "optimum/student/optimum-O3-int8-arm64"]
    assert files[0].path == tmp_path / "m.onnx" and files[0].tool_s == 1.5 and not files[0].arm_only and files[1].arm_only


def _rows(label: str, p50_real: float, correct: str, p50_128: float = 10.0) -> list[dict]:
    acc = correct.count("1") / len(correct)
    base = {"variant": label, "runtime": "onnxruntime", "accuracy": acc, "correct_real": correct, "rss_peak_mb": 50, "load_ms": 5}
    return [{**base, "seq_len": 128, "p50_ms": p50_128, "p90_ms": p50_128 * 1.1, "accuracy_fixed": {"128": acc}},
            {**base, "seq_len": "real", "p50_ms": p50_real, "p90_ms": p50_real * 1.2}]


SYSTEMS = {
    "teacher/torch-eager": {"kind": "teacher-reference", "role": "teacher", "precision": "fp32", "tool": "torch"},
    "optimum/teacher/int8": {"kind": "peer", "role": "teacher", "precision": "int8-dynamic", "tool": "optimum"},
    "aiedge/teacher/fp32": {"kind": "peer", "role": "teacher", "precision": "fp32", "tool": "aiedge"},
    "optimum/student/int8": {"kind": "peer", "role": "student", "precision": "int8-dynamic", "tool": "optimum"},
    "olive/student/fp32": {"kind": "peer", "role": "student", "precision": "fp32", "tool": "olive"},
    "olive/teacher": {"kind": "peer", "role": "teacher", "precision": "-", "tool": "olive", "error": "no venv"},
    "albert-edge/shipped/onnx-int8": {"kind": "shipped", "role": "student", "precision": "int8-dynamic", "tool": "albert-edge"},
}
TEACHER_OK = "1" * 90 + "0" * 10


def _round(shipped_real: float, shipped_correct: str = TEACHER_OK) -> list[dict]:
    rows = (_rows("teacher/torch-eager", 40.0, TEACHER_OK) + _rows("optimum/teacher/int8", 9.0, TEACHER_OK)
            + _rows("aiedge/teacher/fp32", 12.0, TEACHER_OK) + _rows("optimum/student/int8", 2.0, "1" * 88 + "0" * 12)
            + _rows("olive/student/fp32", 1.0, "1" * 89 + "0" * 11) + _rows("albert-edge/shipped/onnx-int8", shipped_real, shipped_correct))
    return common.summarise(rows, SYSTEMS)


def test_summarise_keeps_failed_systems_with_their_reason() -> None:
    table = _round(2.0)
    by = {t["system"]: t for t in table}
    assert by["olive/teacher"]["error"] == "no venv"
    assert by["albert-edge/shipped/onnx-int8"]["p50_real_ms"] == 2.0 and by["albert-edge/shipped/onnx-int8"]["accuracy"] == 0.9


def test_targets_compare_with_the_fastest_peer_files_only() -> None:
    checks = {c["check"]: c for c in common.check_targets(_round(2.0))}
    t1 = checks["(1) p50 @real: fastest peer teacher file / shipped"]
    assert t1["value"] == 4.5 and t1["ok"] and "optimum/teacher/int8" in t1["target"]
    assert checks["(1) accuracy vs teacher, lower 95 % bound (points)"]["ok"]  # identical rows: interval [0, 0]
    # (2) only int8 peer files of the student count: olive's fp32 file (faster) is not "the best peer's int8"
    t2 = checks["(2) p50 @real: fastest peer int8 student / shipped"]
    assert t2["value"] == 1.0 and t2["ok"] and "optimum/student/int8" in t2["target"]
    assert checks["(2) accuracy - that peer file's (points)"]["value"] == 2.0


def test_a_target_holds_only_when_its_worst_round_holds() -> None:
    fast, slow = common.check_targets(_round(2.0)), common.check_targets(_round(3.5))
    combined = {c["check"]: c for c in common.combine_rounds([fast, slow])}
    t1 = combined["(1) p50 @real: fastest peer teacher file / shipped"]
    assert t1["values"] == [4.5, round(9 / 3.5, 3)] and t1["worst_round"] == 2 and not t1["ok"]
    assert not combined["(2) p50 @real: fastest peer int8 student / shipped"]["ok"]


def test_accuracy_target_reads_the_paired_interval() -> None:
    worse = "0" * 20 + "1" * 70 + "0" * 10  # 20 rows the teacher got right are now wrong
    checks = {c["check"]: c for c in common.check_targets(_round(2.0, worse))}
    acc = checks["(1) accuracy vs teacher, lower 95 % bound (points)"]
    assert acc["value"] < -1.0 and not acc["ok"] and "[" in acc["target"]


def test_render_lists_every_system_and_check() -> None:
    tables = [_round(2.0)]
    table = common.median_table(tables)
    checks = common.combine_rounds([common.check_targets(tables[0])])
    text = common.render(table, checks, {"threads": 2, "rounds": 1, "command": "python benchmarks/peers/run.py -p smoke",
                                         "notes": {"olive": "FAILED olive/teacher: setup: no venv"}})
    for label in SYSTEMS:
        assert f"| {label} |" in text
    assert (
        "**not measured**: no venv" in text and "| albert-edge/shipped/onnx-int8 | (1) p50 @real" in text and "FAILED olive/teacher" in text
    )


def test_no_peer_measured_fails_the_targets_instead_of_passing_them() -> None:
    table = [t for t in _round(2.0) if t.get("kind") != "peer"]
    checks = common.check_targets(table)
    assert checks and not any(c["ok"] for c in checks if "peer" in c["check"])


# ---------------------------------------------------------------- the recipes, on the tiny model


@pytest.mark.slow
@pytest.mark.peers
@pytest.mark.parametrize("peer", common.PEERS)
def test_peer_recipe_converts_the_tiny_model(peer: str, tiny_teacher, tmp_path: Path) -> None:
    """Each recipe, in its venv, on the session's tiny teacher: it writes peer.json listing at
    least one file, and the files it lists exist."""
    py = common.venv_python(peer)
    if not py.is_file():
        pytest.skip(f"{peer}: no venv at {py.parent.parent} (run benchmarks/peers/setup.sh {peer})")
    out = tmp_path / peer
    env = {**os.environ, "PYTHONPATH": str(common.REPO_ROOT), "PEER_THREADS": "1"}
    argv = [str(py), str(common.recipe_path(peer)), "--role", "teacher", "--model-dir", str(tiny_teacher.model_dir), "--out", str(out),
            "--isa", common.host_isa(common.read_cpu_flags())]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900, check=False)  # noqa: S603
    files, data = common.read_peer_result(out)
    assert files, f"{peer}: {common.failure_text(data)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    assert all(f.path.is_file() for f in files)
    assert sys.executable != str(py)


def test_arm_summary_reports_agreement_and_why_a_file_did_not_run() -> None:
    rows = [
        {"variant": "optimum/teacher/int8-arm64", "device": "qemu-aarch64", "runtime": "onnxruntime", "seq_len": 128, "eval_rows": 200,
         "accuracy": 0.9, "host_accuracy": 0.905, "host_agreement": 0.995, "host_max_abs_diff": 0.04},
        {"variant": "optimum/teacher/int8-arm64", "device": "qemu-aarch64", "runtime": "onnxruntime", "seq_len": "real"},
        {"variant": "executorch/student/int8", "device": "qemu-aarch64", "runtime": "executorch", "seq_len": None, "skipped": True,
         "error": "executorch runtime does not load here"},
    ]
    got = common.arm_summary(rows)
    assert [a["system"] for a in got] == ["optimum/teacher/int8-arm64", "executorch/student/int8"]
    assert got[0]["host_agreement"] == 0.995 and got[0]["error"] is None
    text = common.render_arm(got, "qemu-aarch64")
    assert "| optimum/teacher/int8-arm64 | onnxruntime  | 200 | 90.00% | 90.50% | 99.50% | 0.04 |  |" in text
    assert "skipped: executorch runtime does not load here" in text


def test_arm_runs_predict_a_row_sample_at_real_lengths_under_the_given_time_limit() -> None:
    from benchmarks.peers.run import arm_config, main

    cfg = arm_config("qemu-aarch64", 100, 300.0)
    assert cfg.timeout_s == 300.0 and cfg.accuracy_rows == 100 and cfg.devices == ("qemu-aarch64",)
    assert cfg.accuracy and cfg.accuracy_seq_lens == () and not cfg.real_lengths  # answers only: emulated latencies mean nothing
    with pytest.raises(SystemExit) as err:
        main(["--arm", "qemu-aarch64", "--arm-timeout", "0"])
    assert err.value.code == 2


def test_timing_rounds_wait_for_builds_and_carry_round_one_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each timed round takes the machine lock exclusively: it starts only after a build holding
    the lock (as a sweep trial does) ends; round 2 only times and carries round 1's accuracy."""
    import threading
    import time

    from albert_edge import nodelock
    from benchmarks.peers import run as peers_run

    monkeypatch.setenv(nodelock.LOCK_DIR_ENV, str(tmp_path))
    events: list[str] = []

    def fake_run_on_device(device, targets, inputs, cfg, extra):  # noqa: ANN001, ANN202
        events.append(f"measure round {extra['round']}")
        return [{"variant": targets[0].name, "seq_len": "real", "p50_ms": 1.0, **({"accuracy": 0.9} if cfg.accuracy else {})}]

    monkeypatch.setattr(peers_run, "run_on_device", fake_run_on_device)
    started = threading.Event()

    def build() -> None:
        with nodelock.building():
            events.append("build start")
            started.set()
            time.sleep(0.5)
            events.append("build end")

    t = threading.Thread(target=build)
    t.start()
    started.wait(5)
    cfg = peers_run.BenchConfig(devices=("local",))
    timing = peers_run.dataclasses.replace(cfg, accuracy=False)
    target = peers_run.Target("a/b/c", "onnx", "fp32", [tmp_path / "x.onnx"], {})
    rounds = peers_run.timed_rounds([(target, None)], tmp_path / "eval.npz", cfg, timing, {"run_id": "r"}, 2)
    t.join()
    assert events == ["build start", "build end", "measure round 1", "measure round 2"]
    assert [r[0]["accuracy"] for r in rounds] == [0.9, 0.9]
