"""Per-step seeds and the seed-spread table."""

from __future__ import annotations

import pytest

from albert_edge.config import load_pipeline
from albert_edge.paths import REPO_ROOT
from albert_edge.registry import get_stage
from albert_edge.runner import cache_key
from benchmarks.seed_spread import spread, table


def test_a_step_seed_changes_that_step_and_what_follows_only():
    base = load_pipeline(REPO_ROOT / "pipelines.yaml", "sst2-mobile")
    other = load_pipeline(REPO_ROOT / "pipelines.yaml", "sst2-mobile-seed2")
    assert other.for_step(other.step("prune")).seed == 2 and other.for_step(other.step("distill")).seed == base.seed
    for sid in ("teacher", "distill"):
        s1, s2 = base.step(sid), other.step(sid)
        assert cache_key(get_stage(s1.stage), s1, base, {}) == cache_key(get_stage(s2.stage), s2, other, {})
    p1, p2 = base.step("prune"), other.step("prune")
    assert cache_key(get_stage("prune"), p1, base, {}) != cache_key(get_stage("prune"), p2, other, {})


def test_spread_gives_mean_min_max_per_file():
    rows = [{"seed": s, "pruned": {"val_accuracy": v, "accuracy": a}} for s, v, a in ((1, 0.9, 0.8), (2, 0.92, 0.84), (3, 0.91, 0.86))]
    out = spread(rows)
    assert out["pruned"]["accuracy"]["mean"] == pytest.approx(0.8333333)
    assert (out["pruned"]["accuracy"]["min"], out["pruned"]["accuracy"]["max"], out["pruned"]["val_accuracy"]["n"]) == (0.8, 0.86, 3)
    assert "83.33 % (80.00-86.00)" in table(rows, out)
