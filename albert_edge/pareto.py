"""Pareto fronts, constraints and the pick over measured sweep trials.

Pure functions over plain rows (dicts from sweeps/<name>/trials.jsonl), so the selection rules are
unit-tested on crafted rows and the same code judges a real sweep. Selection reads validation
accuracy only (`val_accuracy`); dev accuracy is carried in the rows for reporting, never compared.
"""

from __future__ import annotations

import math
from typing import Any

# objective -> direction; every objective a sweep can name
OBJECTIVES: dict[str, str] = {"val_accuracy": "max", "p50_ms": "min", "size_mb": "min", "rss_peak_mb": "min"}


def _value(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def usable(row: dict[str, Any], objectives: tuple[str, ...] | list[str]) -> bool:
    """A finished trial with a number for every objective (failed trials never enter a front)."""
    return row.get("status") == "ok" and all(_value(row, k) is not None for k in objectives)


def dominates(a: dict[str, Any], b: dict[str, Any], objectives: tuple[str, ...] | list[str]) -> bool:
    """`a` is at least as good as `b` in every objective and strictly better in one."""
    better = False
    for k in objectives:
        x, y = _value(a, k), _value(b, k)
        assert x is not None and y is not None
        if OBJECTIVES[k] == "min":
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def pareto_front(rows: list[dict[str, Any]], objectives: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """The rows no other usable row dominates, in input order. Rows with identical objective
    values do not dominate each other, so duplicates are all on the front."""
    ok = [r for r in rows if usable(r, objectives)]
    return [r for r in ok if not any(dominates(o, r, objectives) for o in ok if o is not r)]


def violations(row: dict[str, Any], constraints: dict[str, Any]) -> list[str]:
    """Why `row` misses the constraints ([] when it meets them). Keys: max_accuracy_drop (points
    of validation accuracy below the teacher's), max_p50_ms, max_size_mb, max_rss_mb."""
    out = []
    checks = (("max_accuracy_drop", "accuracy_drop_points", "points below the teacher (validation)"),
              ("max_p50_ms", "p50_ms", "ms p50"), ("max_size_mb", "size_mb", "MB"), ("max_rss_mb", "rss_peak_mb", "MB peak RSS"))
    for limit_key, key, unit in checks:
        limit = constraints.get(limit_key)
        if limit is None:
            continue
        v = _value(row, key)
        if v is None:
            out.append(f"{key} unknown")
        elif v > limit + 1e-12:
            out.append(f"{key} {v:.4g} {unit} > {limit:g}")
    return out


def pick(rows: list[dict[str, Any]], constraints: dict[str, Any]) -> dict[str, Any] | None:
    """The best finished trial that meets every constraint: highest validation accuracy, then
    lowest p50 latency, then smallest file, then trial id (so the pick is reproducible)."""
    ok = [r for r in rows if r.get("status") == "ok" and _value(r, "val_accuracy") is not None and not violations(r, constraints)]
    if not ok:
        return None

    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (-(_value(r, "val_accuracy") or 0.0), _value(r, "p50_ms") or math.inf, _value(r, "size_mb") or math.inf, str(r.get("trial")))

    return min(ok, key=order)


def versus_baseline(rows: list[dict[str, Any]], round_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each re-timed trial against the hand-tuned baseline: validation accuracy difference
    (points), the baseline's p50 over the trial's in every round both were timed in (a speed-up
    when above 1), the worst of those rounds, and whether the trial dominates (accuracy at least the
    baseline's and faster in its worst round). Empty when the baseline was not re-timed."""
    base = next((r for r in rows if r.get("baseline") and r.get("status") == "ok"), None)
    if base is None:
        return []
    p50: dict[tuple[str, int], float] = {}
    for r in round_rows:
        v = _value(r, "p50_ms")
        if v is not None and v > 0:
            p50[(str(r.get("trial")), int(r.get("round", 0)))] = v
    base_id = str(base.get("trial"))
    base_rounds = {rnd for (t, rnd) in p50 if t == base_id}
    out = []
    for r in rows:
        tid = str(r.get("trial"))
        if r is base or r.get("status") != "ok":
            continue
        ratios = {rnd: p50[(base_id, rnd)] / p50[(tid, rnd)] for rnd in sorted(base_rounds) if (tid, rnd) in p50}
        if not ratios:
            continue
        acc, base_acc = _value(r, "val_accuracy"), _value(base, "val_accuracy")
        diff = None if acc is None or base_acc is None else round(100.0 * (acc - base_acc), 4)
        worst = min(ratios.values())
        out.append({"trial": tid, "params": r.get("params"), "val_points_vs_baseline": diff, "speedup_by_round": ratios,
                    "worst_speedup": worst, "dominates": diff is not None and diff >= 0 and worst > 1.0})
    return out
