"""Committed results must be one run of a pipeline that pipelines.yaml defines: the check itself on
the committed tree, and on constructions of what it must reject (no training, no measuring)."""

from __future__ import annotations

import json

from albert_edge.config import validate_file
from benchmarks.provenance import REPO_ROOT
from benchmarks.results_check import RESULTS_ROOT, row_problems, tree_problems

KNOWN = {p.name for p in validate_file(REPO_ROOT / "pipelines.yaml")}


def _row(**kw):
    return {"run_id": "rebuild-1", "git_commit": "a" * 40, "git_dirty": False, "pipeline": "sst2-mobile", "config_hash": "c" * 16, **kw}


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_committed_results_are_one_run_of_a_known_pipeline():
    problems = tree_problems(RESULTS_ROOT, KNOWN)
    assert not problems, "stale committed results (rebuild with `python -m benchmarks.rebuild_results`):\n" + "\n".join(problems)


def test_one_clean_run_passes(tmp_path):
    _write(tmp_path / "sst2-mobile" / "results.jsonl", [_row(), _row()])
    _write(tmp_path / "sst2-mobile" / "compare" / "results.jsonl", [_row(round=1), _row(round=2)])
    (tmp_path / "sst2-mobile" / "report.md").write_text("# report")
    assert tree_problems(tmp_path, KNOWN) == []


def test_peer_runs_are_held_to_the_same_rules(tmp_path):
    _write(tmp_path / "peers" / "sst2-mobile" / "results.jsonl", [_row(bench="peers"), _row(bench="peers")])
    assert tree_problems(tmp_path, KNOWN) == []
    _write(tmp_path / "peers" / "sst2-h4" / "results.jsonl", [_row(pipeline="sst2-h4")])
    _write(tmp_path / "peers" / "sst2-mobile" / "results.jsonl", [_row(), _row(run_id="rebuild-2")])
    problems = "\n".join(tree_problems(tmp_path, KNOWN))
    assert "peers/sst2-h4/: not a pipeline in pipelines.yaml" in problems
    assert "peers/sst2-mobile/results.jsonl: rows from more than one run_id" in problems


def test_the_old_mixed_file_is_rejected(tmp_path):
    """What was committed before: 19 rows of an `sst2-h4` run beside 3 rows of an older sst2-mobile
    run, none stamped with a run id or commit."""
    old = [{"pipeline": "sst2-h4", "device": "local:vm"}] * 19 + [{"pipeline": "sst2-mobile", "device": "qemu-aarch64"}] * 3
    _write(tmp_path / "sst2-mobile" / "results.jsonl", old)
    problems = "\n".join(tree_problems(tmp_path, KNOWN))
    assert "not in pipelines.yaml: sst2-h4" in problems
    assert "more than one pipeline" in problems and "have no run_id" in problems and "have no git_commit" in problems


def test_each_kind_of_mixing_is_named():
    assert any("more than one run_id" in p for p in row_problems([_row(), _row(run_id="other")], KNOWN, "f"))
    assert any("more than one git_commit" in p for p in row_problems([_row(), _row(git_commit="b" * 40)], KNOWN, "f"))
    assert any("more than one config_hash" in p for p in row_problems([_row(), _row(config_hash="d" * 16)], KNOWN, "f"))
    assert any("uncommitted changes" in p for p in row_problems([_row(git_dirty=True)], KNOWN, "f"))
    assert row_problems([], KNOWN, "f") == ["f: no rows"]


def test_files_across_a_directory_must_share_the_run(tmp_path):
    _write(tmp_path / "sst2-mobile" / "results.jsonl", [_row()])
    _write(tmp_path / "sst2-mobile" / "compare" / "results.jsonl", [_row(run_id="rebuild-2")])
    assert any("more than one run" in p for p in tree_problems(tmp_path, KNOWN))


def test_stray_files_and_unknown_directories_are_rejected(tmp_path):
    (tmp_path / "sst2_compare.md").write_text("x")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("x")
    _write(tmp_path / "albert-base-v2-latency" / "results.jsonl", [_row()])  # rows of another pipeline
    problems = "\n".join(tree_problems(tmp_path, KNOWN))
    assert "sst2_compare.md: not inside a pipeline directory" in problems
    assert "report/: not a pipeline in pipelines.yaml" in problems and "report/: no results.jsonl" in problems
    assert "rows of pipeline sst2-mobile in the directory of albert-base-v2-latency" in problems


def _trial(**kw):
    return _row(**{"sweep": "sst2-mobile-proxy", "status": "ok", "trial": "t1", **kw})


def test_a_sweep_is_one_run_over_one_pipeline(tmp_path):
    d = tmp_path / "sweeps" / "sst2-mobile-proxy"
    failed = {"sweep": "sst2-mobile-proxy", "pipeline": "sst2-mobile", "status": "failed", "error": "gate"}
    _write(d / "trials.jsonl", [_trial(), _trial(trial="t2", config_hash="d" * 16), failed])
    assert tree_problems(tmp_path, KNOWN) == []  # each trial is its own recipe: config hashes differ
    _write(d / "trials.jsonl", [_trial(), _trial(trial="t2", git_commit="b" * 40), _trial(trial="t3", git_dirty=True),
                                _trial(trial="t4", sweep="other")])
    problems = "\n".join(tree_problems(tmp_path, KNOWN))
    assert "more than one git_commit" in problems and "uncommitted changes" in problems
    assert "rows of sweep(s) other, sst2-mobile-proxy in the directory of sst2-mobile-proxy" in problems
    _write(d / "trials.jsonl", [failed])
    assert "no measured trial" in "\n".join(tree_problems(tmp_path, KNOWN))
    (d / "trials.jsonl").unlink()
    assert "no trials.jsonl" in "\n".join(tree_problems(tmp_path, KNOWN))
