"""Where things live: the repo, the read-only shared data (datasets, vocabulary), the artifact cache."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """`$ALBERT_EDGE_SHARED_DATA`, else `../shared/data` beside the repo (never copied in)."""
    env = os.environ.get("ALBERT_EDGE_SHARED_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return (REPO_ROOT.parent / "shared" / "data").resolve()


def albert_vocab_dir() -> Path:
    return shared_data_dir() / "albert-vocab"


def default_cache_dir() -> Path:
    """`$ALBERT_EDGE_CACHE`, else `.albert-edge/` in the current directory."""
    env = os.environ.get("ALBERT_EDGE_CACHE")
    return Path(env).expanduser().resolve() if env else (Path.cwd() / ".albert-edge").resolve()
