"""benchmarks/compare_sst2.py: the issue's targets are checked from one run's rows, not assumed."""

from __future__ import annotations

import pytest

from benchmarks.compare_sst2 import check_targets, render, summarise


def _rows(variant, runtime, p128, preal, acc, rss):
    base = {"variant": variant, "runtime": runtime, "rss_peak_mb": rss, "load_ms": 10.0, "cv": 0.01, "runs": 50}
    return [{**base, "seq_len": 128, "p50_ms": p128, "p90_ms": p128 * 1.1, "accuracy_fixed": {"128": acc}},
            {**base, "seq_len": "real", "p50_ms": preal, "p90_ms": preal * 1.2, "accuracy": acc, "agreement": 1.0}]


def _table(c_p128=2.0, c_real=0.6, c_acc=0.895, c_mb=8.0, be_real=1.9):
    rows = (_rows("a", "torch", 16.0, 7.0, 0.901, 500) + _rows("b", "onnxruntime", 9.0, 2.0, 0.886, 100)
            + _rows("be", "onnxruntime", 7.8, be_real, 0.886, 100) + _rows("c", "litert", c_p128, c_real, c_acc, 80))
    names = {"A": "a", "B": "b", "B-eager": "be", "C-litert-dynamic": "c"}
    sizes = {"A": 91_500_000, "B": 23_200_000, "B-eager": 23_200_000, "C-litert-dynamic": int(c_mb * 1e6)}
    return summarise(rows, names, sizes)


def _by_check(checks):
    return {c["check"]: c for c in checks}


def test_all_targets_met_when_the_numbers_meet_them():
    checks = check_targets(_table())
    assert all(c["ok"] for c in checks if c["issue_target"])
    got = _by_check(checks)
    assert got["size: A / C"]["value"] == pytest.approx(91.5 / 8.0, abs=1e-3)
    assert got["p50 @128: B / C"]["value"] == pytest.approx(4.5, abs=1e-3)
    assert got["accuracy drop vs A (points)"]["value"] == pytest.approx(0.6, abs=1e-3)


@pytest.mark.parametrize("kwargs, failing", [
    ({"c_acc": 0.889}, "accuracy drop vs A (points)"),           # 1.2 points below A
    ({"c_mb": 9.5}, "size: A / C"),                               # 9.6x
    ({"c_p128": 2.2}, "p50 @128: A / C"),                         # 7.3x
    ({"c_real": 0.7}, "p50 @real: B / C"),                        # 2.86x
    ({"c_real": 2.5, "c_p128": 2.0}, "p50 @real < p50 @128 (ms)"),
])
def test_each_missed_target_is_reported_as_missed(kwargs, failing):
    got = _by_check(check_targets(_table(**kwargs)))
    assert not got[failing]["ok"]
    assert got["peak RSS: C / A"]["ok"]


def test_stronger_baseline_is_shown_but_not_an_issue_target():
    checks = check_targets(_table(c_real=0.65, be_real=1.7))
    got = _by_check(checks)
    assert not got["p50 @real: B-eager / C"]["ok"] and got["p50 @real: B-eager / C"]["issue_target"] is False
    assert all(c["ok"] for c in checks if c["issue_target"])
    text = render(
        _table(), checks, {"machine": "x86_64 test", "threads": 2, "date": "today", "command": "python benchmarks/compare_sst2.py"}
    )
    assert "| B-eager (be) |" in text and "(stronger B)" in text and "**no**" in text


def test_a_target_is_met_only_when_its_worst_round_meets_it():
    from benchmarks.compare_sst2 import combine_rounds

    rounds = [check_targets(_table(c_real=r)) for r in (0.60, 0.62, 0.70)]  # B/C at real: 3.33x, 3.23x, 2.86x
    got = _by_check(combine_rounds(rounds))
    real_b = got["p50 @real: B / C"]
    assert real_b["values"] == [3.333, 3.226, 2.857]
    assert real_b["median"] == 3.226 and real_b["worst"] == 2.857 and real_b["worst_round"] == 3
    assert not real_b["ok"]  # the median meets 3.0x, the worst round does not
    assert got["size: A / C"]["ok"] and got["size: A / C"]["worst_round"] == 1
    # a check whose bound moves with the round (C at real must beat C at 128 of the same round)
    rounds = [check_targets(_table(c_real=0.6, c_p128=p)) for p in (2.0, 0.5, 2.0)]
    assert not _by_check(combine_rounds(rounds))["p50 @real < p50 @128 (ms)"]["ok"]


def test_median_table_takes_medians_and_keeps_the_range():
    from benchmarks.compare_sst2 import median_table

    tables = [_table(c_p128=p) for p in (2.0, 2.6, 2.2)]
    c = {t["system"]: t for t in median_table(tables)}["C-litert-dynamic"]
    assert c["p50_128_ms"] == 2.2 and c["p50_128_range"] == [2.0, 2.6] and c["rounds"] == 3
    assert c["accuracy"] == 0.895


def test_accuracy_differences_come_with_a_paired_interval():
    from benchmarks.compare_sst2 import accuracy_intervals, interval_checks

    n = 872
    a = ["1"] * 786 + ["0"] * 86            # 90.14 %
    c = list(a)
    for i in range(0, 10):                  # C loses 10 rows A had and gains 5: -0.57 points
        c[i] = "0"
    for i in range(800, 805):
        c[i] = "1"
    rows = [
        {"variant": "a", "seq_len": "real", "correct_real": "".join(a)},
        {"variant": "c", "seq_len": "real", "correct_real": "".join(c)},
    ]
    got = accuracy_intervals(rows, {"A": "a", "C-litert-dynamic": "c"})["C-litert-dynamic"]
    assert got["rows"] == n and got["diff_points"] == pytest.approx(-500 / n)
    lo, hi = got["ci95_points"]
    assert lo < got["diff_points"] < hi < 0.5 and lo > -2.0
    check = interval_checks({"C-litert-dynamic": got})[0]
    assert check["issue_target"] is False and check["worst"] == pytest.approx(-lo, abs=1e-3) and check["ok"] == (-lo <= 1.0)
    text = render(_table(), check_targets(_table()), {"machine": "m", "threads": 2, "date": "d", "command": "c"}, {"C-litert-dynamic": got})
    assert "-0.57 [" in text


def test_rounds_that_predict_differently_are_noticed():
    from benchmarks.compare_sst2 import predictions_stable

    r1 = [{"variant": "c", "seq_len": "real", "correct_real": "1101"}, {"variant": "c", "seq_len": 128}]
    assert predictions_stable([r1, [dict(r) for r in r1]])
    assert not predictions_stable([r1, [{"variant": "c", "seq_len": "real", "correct_real": "1111"}]])
