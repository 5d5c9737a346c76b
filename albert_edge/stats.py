"""Paired uncertainty of an accuracy difference between two models scored on the same rows.

On 872 dev rows one row is 0.11 points, and two models disagree on a few dozen rows: a single
difference cannot tell a 1-point loss from noise. Pairing (resampling rows, not models) uses
that both models saw the same rows, so the interval is much narrower than two separate ones.
numpy only, seeded: the same inputs give the same interval on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

RESAMPLES = 2000
SEED = 0


def _as_bool(v: Sequence[Any] | np.ndarray | str) -> np.ndarray:
    """Per-row correctness from bools, 0/1 numbers or a "0101" string."""
    if isinstance(v, str):
        return np.frombuffer(v.encode("ascii"), dtype=np.uint8) == ord("1")
    return np.asarray(v).astype(bool)


def paired_bootstrap_diff(
    correct_a: Sequence[Any] | np.ndarray | str,
    correct_b: Sequence[Any] | np.ndarray | str,
    resamples: int = RESAMPLES,
    level: float = 0.95,
    seed: int = SEED,
) -> tuple[float, float, float]:
    """(accuracy of a minus accuracy of b, lower, upper): the percentile interval of that
    difference over `resamples` bootstrap resamples of the rows, each row keeping its pair."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    if a.shape != b.shape or a.ndim != 1 or len(a) == 0:
        raise ValueError(f"need two equally long, non-empty per-row vectors (got {a.shape} and {b.shape})")
    d = a.astype(np.int8) - b.astype(np.int8)  # -1, 0, +1 per row
    diff = float(d.mean())
    if not d.any():
        return diff, 0.0, 0.0
    rng = np.random.default_rng(seed)
    n = len(d)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, 2_000_000 // n)  # bounded memory for long vectors
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return diff, float(lo), float(hi)


def mcnemar_exact_p(correct_a: Sequence[Any] | np.ndarray | str, correct_b: Sequence[Any] | np.ndarray | str) -> float:
    """Two-sided exact McNemar p-value: under "the two models are equally accurate" the rows only
    one of them gets right split like fair coin flips."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in length ({a.shape} and {b.shape})")
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_summary(correct_a: Sequence[Any] | np.ndarray | str, correct_b: Sequence[Any] | np.ndarray | str) -> dict[str, Any]:
    """Everything a table prints about a minus b, in accuracy points."""
    a, b = _as_bool(correct_a), _as_bool(correct_b)
    diff, lo, hi = paired_bootstrap_diff(a, b)
    return {
        "diff_points": 100 * diff, "ci95_points": [100 * lo, 100 * hi], "mcnemar_p": mcnemar_exact_p(a, b),
        "rows": len(a), "only_a_right": int(np.sum(a & ~b)), "only_b_right": int(np.sum(~a & b)),
    }


def format_diff(s: dict[str, Any]) -> str:
    """`-0.57 [-1.49, +0.34] p=0.25`: a difference in points with its paired 95 % interval."""
    lo, hi = s["ci95_points"]
    return f"{s['diff_points']:+.2f} [{lo:+.2f}, {hi:+.2f}] p={s['mcnemar_p']:.2g}"
