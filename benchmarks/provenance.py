"""Which code, configuration and artifacts a measured row came from, and which run measured it.

A committed results file is only worth reading when every row in it can be traced back to one
commit, one pipeline definition and one run; this module gives every row the same answer to
those questions (the machine itself is hoststamp.py's job). Host side only.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ID_ENV = "ALBERT_EDGE_RUN_ID"
# result files do not change what is measured, and a rebuild rewrites them while it runs
IGNORED_FOR_DIRTY = ":(exclude)benchmarks/results"
_GIT: dict[str, Any] | None = None


def git_state(root: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit and whether tracked or new files differ from it (results excluded); None for both
    outside a git checkout. Read once per process, so a row written later says the same."""
    global _GIT
    if _GIT is None:
        _GIT = {"git_commit": None, "git_dirty": None}
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=False)
            if head.returncode == 0:
                status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", ".", IGNORED_FOR_DIRTY],
                                        capture_output=True, text=True, timeout=60, check=False)
                _GIT = {"git_commit": head.stdout.strip(), "git_dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}
        except (OSError, subprocess.TimeoutExpired):
            pass
    return dict(_GIT)


def run_id() -> str:
    """One id for everything measured by this process and its children: $ALBERT_EDGE_RUN_ID when
    a caller set it (the rebuild command does), else made here once and exported."""
    rid = os.environ.get(RUN_ID_ENV, "").strip()
    if not rid:
        commit = git_state().get("git_commit") or "nogit"
        rid = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{commit[:8]}-{os.getpid()}"
        os.environ[RUN_ID_ENV] = rid
    return rid


def config_hash(pipeline: Any) -> str:
    """Hash of a resolved pipeline: its settings and every step's stage, config and inputs (two
    runs with the same hash ran the same definition, whatever the YAML file looked like)."""
    from albert_edge.config import stable_hash

    steps = [{"id": s.id, "stage": s.stage, "config": s.config_dict(), "inputs": dict(s.inputs)} for s in pipeline.steps]
    return stable_hash({"settings": pipeline.settings_dict(), "threads": pipeline.threads, "steps": steps})[:16]


def run_stamp(pipeline: Any = None, artifact_keys: dict[str, str | None] | None = None, pipeline_name: str | None = None) -> dict[str, Any]:
    """The fields every measured row carries: run id, git commit and dirty flag, pipeline name and
    config hash (None when measured outside a pipeline), keys of the artifacts measured."""
    return {
        "run_id": run_id(),
        **git_state(),
        "pipeline": pipeline.name if pipeline is not None else pipeline_name,
        "config_hash": config_hash(pipeline) if pipeline is not None else None,
        "artifact_keys": dict(artifact_keys or {}),
    }


def artifact_key(path: Path) -> tuple[str | None, str | None]:
    """(key, pipeline) from the manifest of the artifact that holds `path` (it or a parent)."""
    import json

    for d in (path, *list(path.parents)[:2]):
        m = d / "manifest.json"
        if m.is_file():
            try:
                manifest = json.loads(m.read_text())
            except (OSError, ValueError):
                return None, None
            return manifest.get("key"), manifest.get("pipeline")
    return None, None
