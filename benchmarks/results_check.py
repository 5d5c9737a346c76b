"""What makes a committed results directory trustworthy: every file in it is one run of one
pipeline that pipelines.yaml still defines, measured from one commit.

Layout: benchmarks/results/<pipeline>/ holds that pipeline's report (results.jsonl, report.md,
...) and optionally compare/ (the A/B/C comparison). Every row of every results file there must
carry the same run id, commit and pipeline, from a clean checkout; anything else is stale.
peers/<pipeline>/ (benchmarks/peers/run.py) follows the same rules. sweeps/<sweep>/ holds one
`albert-edge sweep` (trials.jsonl): every trial of that sweep over one pipeline, and every measured
trial from the same run and commit of a clean checkout (each trial is its own recipe, so its
config hash is its own).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS_ROOT = Path(__file__).resolve().parent / "results"
ROW_FILES = ("results.jsonl", "sst2_compare.json")  # files whose rows carry the stamps
SAME = ("run_id", "git_commit", "pipeline", "config_hash")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The measured rows of a results file (a JSON-lines file, or a compare JSON's `rows`)."""
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return list(json.loads(path.read_text()).get("rows", []))


PEERS_DIR = "peers"
SWEEPS_DIR = "sweeps"
SWEEP_ROWS = "trials.jsonl"
SWEEP_SAME = ("run_id", "git_commit", "pipeline")  # each trial is its own recipe: config hashes differ


def sweep_problems(d: Path, known: set[str]) -> list[str]:
    """Why sweeps/<name>/ is not one sweep of a known pipeline, measured from one clean commit."""
    where = f"{SWEEPS_DIR}/{d.name}/{SWEEP_ROWS}"
    if not (d / SWEEP_ROWS).is_file():
        return [f"{SWEEPS_DIR}/{d.name}/: no {SWEEP_ROWS}: its other files cannot be traced to a sweep"]
    rows = read_rows(d / SWEEP_ROWS)
    if not rows:
        return [f"{where}: no rows"]
    out = []
    names = sorted({str(r.get("sweep")) for r in rows})
    if names != [d.name]:
        out.append(f"{where}: rows of sweep(s) {', '.join(names)} in the directory of {d.name}")
    measured = [r for r in rows if r.get("status") == "ok"]
    if not measured:
        out.append(f"{where}: no measured trial")
    return out + row_problems(measured, known, where, same=SWEEP_SAME)


def row_problems(rows: list[dict[str, Any]], known: set[str], where: str, same: tuple[str, ...] = SAME) -> list[str]:
    """Why these rows are not one clean run of a known pipeline (empty: they are); `same` are
    the stamps every row must carry, with one value."""
    if not rows:
        return [f"{where}: no rows"]
    out = []
    for key in same:
        missing = sum(1 for r in rows if not r.get(key))
        if missing:
            out.append(f"{where}: {missing} of {len(rows)} rows have no {key}")
        values = sorted({str(r.get(key)) for r in rows if r.get(key)})
        if len(values) > 1:
            out.append(f"{where}: rows from more than one {key}: {', '.join(values)}")
    unknown = sorted({str(r.get("pipeline")) for r in rows if r.get("pipeline") and r.get("pipeline") not in known})
    if unknown:
        out.append(f"{where}: pipeline(s) not in pipelines.yaml: {', '.join(unknown)}")
    dirty = sum(1 for r in rows if r.get("git_dirty") is not False)
    if dirty:
        out.append(f"{where}: {dirty} rows measured from a checkout with uncommitted changes (or unknown)")
    return out


def tree_problems(root: Path, known: set[str]) -> list[str]:
    """Every problem under a results root: files outside a pipeline directory, directories of
    unknown pipelines or without rows, and rows that mix runs (within a file or a directory)."""
    if not root.is_dir():
        return []
    out = [f"{p.relative_to(root)}: not inside a pipeline directory" for p in sorted(root.iterdir()) if p.is_file()]
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name == SWEEPS_DIR:
            out += [problem for s in sorted(p for p in d.iterdir() if p.is_dir()) for problem in sweep_problems(s, known)]
            continue
        if d.name == PEERS_DIR:  # side-by-side runs (benchmarks/peers/run.py): peers/<pipeline>/, held to the same rules
            out += [f"{PEERS_DIR}/{problem}" for problem in tree_problems(d, known)]
            continue
        if d.name not in known:
            out.append(f"{d.name}/: not a pipeline in pipelines.yaml")
        files = sorted(f for f in d.rglob("*") if f.is_file() and f.name in ROW_FILES)
        if not files:
            out.append(f"{d.name}/: no results.jsonl: its other files cannot be traced to a run")
            continue
        runs: set[str] = set()
        for f in files:
            rows = read_rows(f)
            where = str(f.relative_to(root))
            out += row_problems(rows, known, where)
            out += [
                f"{where}: rows of pipeline {p} in the directory of {d.name}"
                for p in sorted({str(r.get("pipeline")) for r in rows})
                if p != d.name
            ]
            runs |= {str(r.get("run_id")) for r in rows}
        if len(runs) > 1:
            out.append(f"{d.name}/: files from more than one run: {', '.join(sorted(runs))}")
    return out
