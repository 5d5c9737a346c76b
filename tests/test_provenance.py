"""benchmarks/provenance.py: every row says which commit, pipeline definition and run it came from."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

from albert_edge.config import load_pipeline
from benchmarks.provenance import REPO_ROOT, config_hash, run_stamp


def test_run_stamp_names_commit_pipeline_config_and_artifacts():
    pipe = load_pipeline(REPO_ROOT / "pipelines.yaml", "smoke")
    s = run_stamp(pipe, {"bundle": "abc"})
    assert s["pipeline"] == "smoke" and s["artifact_keys"] == {"bundle": "abc"}
    assert re.fullmatch(r"[0-9a-f]{16}", s["config_hash"])
    assert re.fullmatch(r"[0-9a-f]{40}", s["git_commit"]) and isinstance(s["git_dirty"], bool)
    assert s["run_id"] == run_stamp()["run_id"]  # one id per process


def test_config_hash_follows_the_definition_not_the_name():
    smoke = load_pipeline(REPO_ROOT / "pipelines.yaml", "smoke")
    renamed = dataclasses.replace(smoke, name="other")
    assert config_hash(renamed) == config_hash(smoke)
    changed = dataclasses.replace(smoke, seed=smoke.seed + 1)
    assert config_hash(changed) != config_hash(smoke)


def test_run_id_from_the_environment_reaches_children():
    code = "from benchmarks.provenance import run_id; print(run_id())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT,
                         env={"ALBERT_EDGE_RUN_ID": "rebuild-1", "PATH": "/usr/bin:/bin"}).stdout
    assert out.strip() == "rebuild-1"
