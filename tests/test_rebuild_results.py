"""benchmarks/rebuild_results.py: what it rebuilds exists, and a name that does not is refused
before anything runs."""

from __future__ import annotations

import pytest

from albert_edge.config import load_pipeline, validate_file
from benchmarks.provenance import REPO_ROOT
from benchmarks.rebuild_results import COMPARED, DEFAULT_PIPELINES, first_benchmark_step, main

YAML = REPO_ROOT / "pipelines.yaml"


def test_default_pipelines_exist_and_have_a_benchmark_step():
    known = {p.name for p in validate_file(YAML)}
    assert set(DEFAULT_PIPELINES) <= known and COMPARED <= set(DEFAULT_PIPELINES)
    for name in DEFAULT_PIPELINES:
        assert first_benchmark_step(load_pipeline(YAML, name)) == "benchmark"


def test_unknown_pipeline_is_refused_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["-p", "sst2-h4", "--out", str(tmp_path)])
    assert err.value.code == 2 and "sst2-h4" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
