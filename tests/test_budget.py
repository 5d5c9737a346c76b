"""The one accuracy budget: verdicts for models and files, the stage verdict over files, the
runner's gate, and the bundle leaving out (or refusing) a file that misses."""

from __future__ import annotations

import json

import pytest

from albert_edge.budget import Budget, drop_points, inc_tolerance, judge, stage_verdict, within
from albert_edge.schema import ConfigError, build
from tests.conftest import TINY_YAML, run_yaml, write_yaml


def test_judge_reads_accuracy_against_the_teacher_and_agreement_against_fp32():
    b = Budget(max_accuracy_drop=1.0, min_agreement=0.99)
    ok = judge("f", b, accuracy=0.895, reference=0.90, agreement=0.995, rows=2000)
    assert ok.passed and ok.reasons == () and ok.drop_points == pytest.approx(0.5)
    slow = judge("f", b, accuracy=0.885, reference=0.90, agreement=1.0, rows=2000)
    assert not slow.passed and "1.50 points below" in slow.reasons[0]
    flips = judge("f", b, accuracy=0.90, reference=0.90, agreement=0.98, rows=2000)
    assert not flips.passed and "agreement" in flips.reasons[0] and "98.00%" in flips.reasons[0]
    both = judge("f", b, accuracy=0.80, reference=0.90, agreement=0.5, rows=10)
    assert len(both.reasons) == 2 and both.as_dict()["reasons"] == list(both.reasons)


def test_budget_edges_and_no_limit():
    assert within(Budget(max_accuracy_drop=1.0), 0.90, 0.89)  # exactly one point is inside
    assert not within(Budget(max_accuracy_drop=0.0), 0.90, 0.8999)
    assert within(Budget(max_accuracy_drop=None), 0.90, 0.10)
    assert drop_points(0.9, 0.95) == pytest.approx(-5.0)
    assert judge("f", Budget(min_agreement=0.0), accuracy=0.1, reference=0.9, agreement=0.0).passed


def test_inc_tolerance_matches_the_absolute_budget():
    tol = inc_tolerance(Budget(max_accuracy_drop=1.0), fp32_accuracy=0.92, teacher_accuracy=0.91)
    assert 0.92 * (1 - tol) == pytest.approx(0.90)
    assert inc_tolerance(Budget(max_accuracy_drop=1.0), 0.5, 0.99) == 0.0  # already below: no room


def test_budget_config_is_validated_with_its_path():
    with pytest.raises(ConfigError, match="min_agreement"):
        build(Budget, {"min_agreement": 1.5}, "budget")
    with pytest.raises(ConfigError, match="on_miss"):
        build(Budget, {"on_miss": "ignore"}, "budget")


def _v(name, passed):
    return {"name": name, "verdict": {"passed": passed, "reasons": [] if passed else ["too low"]}}


def test_stage_verdict_fails_on_any_miss_unless_misses_are_dropped():
    files = [_v("a", True), _v("b", False)]
    assert not stage_verdict(files, Budget(on_miss="fail"))["passed"]
    dropped = stage_verdict(files, Budget(on_miss="drop"))
    assert dropped["passed"] and dropped["missed"] == ["b"]
    assert not stage_verdict([_v("b", False)], Budget(on_miss="drop"))["passed"]  # nothing left to ship
    assert stage_verdict([_v("a", True)], Budget())["passed"]


BUNDLE_YAML = (
    TINY_YAML.replace("  budget: {max_accuracy_drop: 100.0, min_agreement: 0.0}", "  budget: {max_accuracy_drop: 100.0, on_miss: ON_MISS}")
    + """\
      - export_onnx: {parity_rows: 16}
      - export_tflite: {buckets: [64], precisions: [fp32], parity_rows: 8}
      - bundle: {golden_rows: 4}
"""
)


def _miss_tflite(monkeypatch):
    """Every .tflite file misses the budget; ONNX files pass: the mechanism under test is what
    the bundle does with a verdict, independent of any kernel's numbers."""
    from albert_edge.budget import Verdict
    from export.judge import FileGate

    real = FileGate.judge

    def judge(self, name, path, buckets):
        v = real(self, name, path, buckets)
        if path.suffix == ".tflite":
            return Verdict(name, False, v.accuracy, v.reference, v.drop_points, v.agreement, v.rows, v.split, ("planted miss",))
        return Verdict(name, True, v.accuracy, v.reference, v.drop_points, v.agreement, v.rows, v.split)

    monkeypatch.setattr(FileGate, "judge", judge)


def test_bundle_drops_a_missing_file_with_its_reason(tiny_teacher, tiny_cache, tmp_path, monkeypatch):
    _miss_tflite(monkeypatch)
    res = run_yaml(write_yaml(tmp_path / "p.yaml", BUNDLE_YAML.replace("ON_MISS", "drop")), "tiny", tiny_cache)
    assert res.exit_code == 0, res.error
    out = res.steps[-1].artifact.path / "bundle"
    meta = json.loads((out / "metadata.json").read_text())
    assert [d["name"] for d in meta["dropped"]] == ["tflite-fp32"] and meta["dropped"][0]["reasons"] == ["planted miss"]
    assert not list(out.glob("*.tflite")) and all(v["verdict"]["passed"] for v in meta["variants"])
    assert {v["format"] for v in meta["variants"]} == {"onnx"} and meta["budget"]["judged_on"] == "validation"


def test_bundle_miss_fails_the_run_and_keeps_the_artifact(tiny_teacher, tiny_cache, tmp_path, monkeypatch):
    _miss_tflite(monkeypatch)
    res = run_yaml(write_yaml(tmp_path / "p.yaml", BUNDLE_YAML.replace("ON_MISS", "fail")), "tiny", tiny_cache)
    assert res.exit_code == 1 and "planted miss" in res.error and "tflite-fp32" in res.error
    step = res.steps[-1]
    assert step.status == "gate-failed" and (step.artifact.path / "bundle" / "metadata.json").is_file()
