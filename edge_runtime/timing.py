"""Time calls the way LiteRT's benchmark_model does, and summarise the per-run latencies."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np


def timed_runs(fn: Callable[[], Any], runs: int, min_secs: float, max_secs: float) -> list[float]:
    """Milliseconds per call: at least `runs` calls and at least `min_secs`, stopping at `max_secs`."""
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
        elapsed = time.perf_counter() - start
        if (len(times) >= runs and elapsed >= min_secs) or elapsed >= max_secs:
            return times


def latency_stats(times_ms: list[float]) -> dict[str, float]:
    """mean, std, p50, p90, p99, min, max and coefficient of variation of per-run latencies."""
    a = np.asarray(times_ms, dtype=np.float64)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    return {
        "mean_ms": mean, "std_ms": std, "min_ms": float(a.min()), "max_ms": float(a.max()),
        "p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
        "cv": std / mean if mean > 0 else 0.0,
    }
