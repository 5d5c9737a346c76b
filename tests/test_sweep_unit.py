"""The sweep's selection rules on crafted rows (Pareto front, constraints, pick) and its space
file validation: no Ray, no training."""

from __future__ import annotations

import pytest

from albert_edge.pareto import dominates, pareto_front, pick, violations
from tests.conftest import write_yaml

OBJ = ("val_accuracy", "p50_ms", "size_mb")


def row(trial, acc, p50, size, status="ok", **kw):
    return {"trial": trial, "status": status, "val_accuracy": acc, "p50_ms": p50, "size_mb": size, **kw}


def test_front_of_crafted_rows():
    rows = [
        row("a", 0.90, 2.0, 6.0),   # front: best accuracy
        row("b", 0.85, 1.0, 6.0),   # front: fastest
        row("c", 0.85, 1.5, 6.0),   # dominated by b (same accuracy and size, slower)
        row("d", 0.80, 1.2, 3.0),   # front: smallest
        row("e", 0.80, 1.2, 3.0),   # identical to d: neither dominates the other, both on the front
        row("f", 0.70, 3.0, 9.0),   # dominated by everyone
        row("g", 0.99, 0.1, 0.1, status="failed"),   # failed trials never enter the front
        row("h", None, 0.1, 0.1),   # no accuracy: not usable
    ]
    assert [r["trial"] for r in pareto_front(rows, OBJ)] == ["a", "b", "d", "e"]
    assert dominates(rows[1], rows[2], OBJ) and not dominates(rows[2], rows[1], OBJ)
    assert not dominates(rows[3], rows[4], OBJ)
    # one objective: only the most accurate rows
    assert [r["trial"] for r in pareto_front(rows, ("val_accuracy",))] == ["a"]
    # two objectives: b and c tie on both axes but a (more accurate, same size) dominates them
    assert [r["trial"] for r in pareto_front(rows, ("val_accuracy", "size_mb"))] == ["a", "d", "e"]
    assert [r["trial"] for r in pareto_front(rows, ("val_accuracy", "p50_ms"))] == ["a", "b"]


def test_constraints_and_pick():
    rows = [
        row("a", 0.90, 2.0, 6.0, accuracy_drop_points=0.5),
        row("b", 0.85, 1.0, 6.0, accuracy_drop_points=5.5),
        row("c", 0.85, 0.9, 6.0, accuracy_drop_points=5.5),
        row("d", 0.80, 1.2, 3.0, accuracy_drop_points=10.5),
    ]
    assert pick(rows, {})["trial"] == "a"
    assert pick(rows, {"max_p50_ms": 1.5})["trial"] == "c"      # b and c tie on accuracy: the faster wins
    assert pick(rows, {"max_size_mb": 4})["trial"] == "d"
    assert pick(rows, {"max_accuracy_drop": 1.0, "max_p50_ms": 1.5}) is None
    assert violations(rows[0], {"max_p50_ms": 1.5, "max_size_mb": 10}) == ["p50_ms 2 ms p50 > 1.5"]
    assert violations({"status": "ok"}, {"max_rss_mb": 100}) == ["rss_peak_mb unknown"]


PIPES = """\
version: 1
defaults:
  seed: 7
  threads: 1
  task: {name: sst2, max_train_rows: 200, max_eval_rows: 60, max_seq_len: 48}
  budget: {max_accuracy_drop: 100.0, min_agreement: 0.0}
pipelines:
  smoke:
    model: "config:tiny"
    stages:
      - finetune: {id: teacher, train: {epochs: 1, batch_size: 32, lr: 3.0e-3}}
      - distill: {student: {num_hidden_layers: 1, embedding_size: 16}, train: {epochs: 1, batch_size: 32, lr: 1.0e-3}}
      - export_onnx: {parity_rows: 16, timing_runs: 3}
      - quantize: {onnx: [dynamic], calibration: {rows: 16}, fallback: {enabled: false}}
      - bundle: {golden_rows: 4}
"""


@pytest.mark.parametrize(("params", "needle"), [
    ("distill.student.nope: [1, 2]", "sweep.params.distill.student.nope: no parameter 'nope' under distill.student"),
    ("prunee.heads: [4]", "sweep.params.prunee.heads: 'prunee' is not a step id of pipeline smoke"),
    ("distill.student.num_hidden_layers: 3", "sweep.params.distill.student.num_hidden_layers: expected a non-empty list"),
    ("distill.train.epochs: [1, -1]", "sweep.params.distill.train.epochs[1]: -1 gives an invalid pipeline"),
    ("task.max_train_rowz: [10]", "no parameter 'max_train_rowz' under task"),
])
def test_space_errors_are_one_line_exit_2(tmp_path, capsys, params, needle):
    from albert_edge.cli import main

    pipes = write_yaml(tmp_path / "p.yaml", PIPES)
    space = write_yaml(tmp_path / "s.yaml", f"version: 1\nsweep:\n  params:\n    {params}\n")
    assert main(["sweep", str(pipes), "-p", "smoke", "--space", str(space), "--out", str(tmp_path / "sweeps")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert "Traceback" not in err and not (tmp_path / "sweeps").exists()


def test_space_schema_errors_name_file_line(tmp_path, capsys):
    from albert_edge.cli import main

    pipes = write_yaml(tmp_path / "p.yaml", PIPES)
    space = write_yaml(tmp_path / "s.yaml", "version: 1\nsweep:\n  strategy: nsga3\n  params: {distill.student.embedding_size: [16]}\n")
    assert main(["sweep", str(pipes), "-p", "smoke", "--space", str(space)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{space}:3: sweep.strategy: 'nsga3' is not allowed" in err and "nsga2" in err
    space = write_yaml(tmp_path / "s.yaml", "version: 1\nsweep:\n  strategy: random\n  params: {distill.student.embedding_size: [16]}\n")
    assert main(["sweep", str(pipes), "-p", "smoke", "--space", str(space)]) == 2
    assert "needs `trials`" in capsys.readouterr().err


def test_trial_pipeline_applies_values_and_keeps_cache_keys(tmp_path):
    """A trial's pipeline is the pipeline with its values applied; values equal to the pipeline's
    own give the same config (so the hand-tuned pipeline's artifacts are reused)."""
    from albert_edge.config import load_pipeline, load_yaml
    from albert_edge.sweepspace import trial_pipeline

    pipes = write_yaml(tmp_path / "p.yaml", PIPES)
    data = load_yaml(pipes)
    base = load_pipeline(pipes, "smoke")
    same = trial_pipeline(data, "smoke", {"distill.student.embedding_size": 16})
    assert [s.config_dict() for s in same.steps] == [s.config_dict() for s in base.steps]
    other = trial_pipeline(data, "smoke", {"distill.student.num_hidden_layers": 2, "task.max_train_rows": 100, "seed": 3})
    assert other.step("distill").config.student.num_hidden_layers == 2
    assert other.task.max_train_rows == 100 and other.seed == 3 and other.name == "smoke"
    assert other.step("teacher").config_dict() == base.step("teacher").config_dict()


def test_node_lock_measurement_waits_for_builds_and_holds_new_ones_back(tmp_path):
    """Builds share the machine; a measurement waits for running builds and new builds queue
    behind it (writer preference), so a measurement is neither concurrent with a build nor starved."""
    import threading
    import time

    from albert_edge import nodelock

    order: list[str] = []
    a_in, a_go = threading.Event(), threading.Event()

    def build_a():
        with nodelock.building(tmp_path):
            order.append("A")
            a_in.set()
            a_go.wait(10)
            order.append("A done")  # while still held: appended after the release, M could come first

    def measure():
        with nodelock.measuring(tmp_path):
            order.append("M")
            time.sleep(0.2)
            order.append("M done")

    def build_b():
        with nodelock.building(tmp_path):
            order.append("B")

    ta = threading.Thread(target=build_a)
    ta.start()
    assert a_in.wait(10)
    tm = threading.Thread(target=measure)
    tm.start()
    time.sleep(0.3)  # M is queued behind A
    tb = threading.Thread(target=build_b)
    tb.start()
    time.sleep(0.3)
    assert order == ["A"]  # neither the measurement nor the new build runs beside A
    a_go.set()
    for t in (ta, tm, tb):
        t.join(10)
    assert order == ["A", "A done", "M", "M done", "B"]


def test_node_lock_is_released_when_its_holder_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from albert_edge import nodelock

    ready = tmp_path / "ready"
    code = (f"from pathlib import Path; import time; from albert_edge import nodelock\n"
            f"with nodelock.building(Path({str(tmp_path)!r})):\n    Path({str(ready)!r}).touch(); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 60
        while not ready.exists():
            assert time.time() < deadline and child.poll() is None
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        t0 = time.time()
        with nodelock.measuring(tmp_path):
            pass
        assert time.time() - t0 < 5
    finally:
        if child.poll() is None:
            child.kill()


def test_random_plan_is_seeded_and_distinct():
    from albert_edge.schema import build
    from albert_edge.sweepspace import SweepSpec

    raw = {"strategy": "random", "trials": 5, "seed": 3, "params": {"a.x": [1, 2, 3], "b.y": [4, 5, 6]}}
    one, two = build(SweepSpec, raw, "sweep").planned(), build(SweepSpec, raw, "sweep").planned()
    assert one == two and len(one) == 5 and len({tuple(v.items()) for v in one}) == 5  # a rerun plans the same trials
    assert build(SweepSpec, {**raw, "seed": 4}, "sweep").planned() != one
    assert len(build(SweepSpec, {**raw, "trials": 50}, "sweep").planned()) == 9  # never more than the combinations
    assert len(build(SweepSpec, {**raw, "strategy": "grid"}, "sweep").planned()) == 9


def test_a_trial_dominates_the_baseline_only_when_its_worst_round_is_faster():
    from albert_edge.pareto import versus_baseline

    rows = [
        {"trial": "base", "baseline": True, "status": "ok", "val_accuracy": 0.80, "params": {}},
        {"trial": "fast", "status": "ok", "val_accuracy": 0.81, "params": {"h": 6}},
        {"trial": "once", "status": "ok", "val_accuracy": 0.82, "params": {"h": 4}},
        {"trial": "worse", "status": "ok", "val_accuracy": 0.79, "params": {"h": 8}},
    ]
    p50 = {"base": (1.0, 1.0, 1.2), "fast": (0.8, 0.9, 0.9), "once": (0.7, 1.1, 0.9), "worse": (0.5, 0.5, 0.5)}
    timed = [{"trial": t, "round": n + 1, "p50_ms": v} for t, vs in p50.items() for n, v in enumerate(vs)]
    got = {v["trial"]: v for v in versus_baseline(rows, timed)}
    assert set(got) == {"fast", "once", "worse"}
    assert got["fast"]["dominates"] and abs(got["fast"]["worst_speedup"] - 1.0 / 0.9) < 1e-9
    assert not got["once"]["dominates"] and abs(got["once"]["worst_speedup"] - 1.0 / 1.1) < 1e-9  # faster in 2 of 3 rounds only
    assert not got["worse"]["dominates"] and got["worse"]["val_points_vs_baseline"] == -1.0  # twice as fast, 1 point less accurate
    assert versus_baseline(rows[1:], timed) == []  # no baseline, no verdict


def test_the_report_says_so_when_the_hand_tuned_pipeline_is_the_whole_front() -> None:
    from albert_edge.sweep_report import _versus_baseline

    rows = [{"trial": "baseline", "baseline": True, "status": "ok", "val_accuracy": 0.55},
            {"trial": "t1", "status": "ok", "val_accuracy": 0.55}]
    timed = [{"trial": "baseline", "baseline": True, "round": n, "p50_ms": 0.2} for n in (1, 2)]
    text = "\n".join(_versus_baseline(rows, timed))
    assert "re-timed in 2 interleaved round(s)" in text and "the hand-tuned pipeline is the whole front" in text
    assert _versus_baseline(rows, []) == []  # not re-timed: no section


@pytest.mark.parametrize(("body", "needle"), [
    ("  strategy: points\n  params: {distill.student.embedding_size: [16, 32]}\n", "sweep.points: strategy points lists its recipes"),
    ("  strategy: points\n  params: {distill.student.embedding_size: [16, 32]}\n  points: [{distill.student.embedding_size: 24}]\n",
     "sweep.points[0].distill.student.embedding_size: 24 is not one of params.distill.student.embedding_size"),
    ("  strategy: points\n  params: {distill.student.embedding_size: [16], seed: [1, 2]}\n  points: [{seed: 1}]\n",
     "sweep.points[0]: set every param once"),
    ("  params: {distill.student.embedding_size: [16, 32]}\n  points: [{distill.student.embedding_size: 16}]\n",
     "sweep.points: only strategy points reads `points`"),
])
def test_points_name_every_param_with_a_listed_value(tmp_path, capsys, body, needle):
    from albert_edge.cli import main

    pipes = write_yaml(tmp_path / "p.yaml", PIPES)
    space = write_yaml(tmp_path / "s.yaml", "version: 1\nsweep:\n" + body)
    assert main(["sweep", str(pipes), "-p", "smoke", "--space", str(space), "--out", str(tmp_path / "sweeps")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_points_plan_exactly_the_listed_recipes(tmp_path, capsys):
    from albert_edge.cli import main

    pipes = write_yaml(tmp_path / "p.yaml", PIPES)
    space = write_yaml(tmp_path / "s.yaml", "version: 1\nsweep:\n  strategy: points\n"
                       "  params: {distill.student.embedding_size: [16, 32], distill.student.num_hidden_layers: [1, 2]}\n"
                       "  points:\n    - {distill.student.num_hidden_layers: 2, distill.student.embedding_size: 16}\n"
                       "    - {distill.student.embedding_size: 32, distill.student.num_hidden_layers: 1}\n")
    assert main(["sweep", str(pipes), "-p", "smoke", "--space", str(space), "--plan"]) == 0
    out = capsys.readouterr().out
    assert "points, 2 trial(s)" in out
    assert '{"distill.student.embedding_size": 16, "distill.student.num_hidden_layers": 2}' in out
    assert '{"distill.student.embedding_size": 32, "distill.student.num_hidden_layers": 1}' in out
