"""The seed spread of sst2-mobile's prune recovery and int8 stages.

Runs (or reuses from the cache) `sst2-mobile` and its seed pipelines (`sst2-mobile-seed2`,
`sst2-mobile-seed3`), which share the teacher and the distilled student and redo pruning
recovery, export and int8 under their own seed; then tabulates validation and eval accuracy of
the pruned model and of every int8 file: each seed, mean and min-max. Prints a table and writes
`benchmarks/results/sst2-mobile/seed_spread.{json,md}`.

    python benchmarks/seed_spread.py [--pipelines sst2-mobile sst2-mobile-seed2 sst2-mobile-seed3] [--no-run]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from albert_edge.config import load_pipeline
from albert_edge.paths import REPO_ROOT, default_cache_dir

DEFAULT = ("sst2-mobile", "sst2-mobile-seed2", "sst2-mobile-seed3")
OUT = REPO_ROOT / "benchmarks" / "results" / "sst2-mobile"


def seed_rows(pipeline_name: str, cache: Path, run: bool, yaml: Path) -> dict[str, Any]:
    """Accuracy figures of one seed pipeline's prune and quantize steps (built when `run`)."""
    from albert_edge.runner import cached_artifacts, run_pipeline

    pipe = load_pipeline(yaml, pipeline_name)
    if run:
        res = run_pipeline(pipe, cache, until="quantize")
        if res.exit_code not in (0, 1):  # 1: a gate failed, the artifact is kept and still reported
            raise SystemExit(f"{pipeline_name}: {res.error}")
    done, why = cached_artifacts(pipe, cache)
    arts = {step.id: art for step, art in done}
    if "quantize" not in arts:
        raise SystemExit(f"{pipeline_name}: not built yet ({why}); run without --no-run")
    prune = arts["prune"]
    out: dict[str, Any] = {"pipeline": pipeline_name, "seed": pipe.for_step(pipe.step("prune")).seed,
                           "prune_key": prune.key, "quantize_key": arts["quantize"].key,
                           "pruned": {"val_accuracy": prune.metrics.get("val_accuracy"), "accuracy": prune.metrics.get("accuracy")}}
    for name, v in arts["quantize"].metrics.get("variants", {}).items():
        out[name] = {"val_accuracy": v.get("val_accuracy"), "accuracy": v.get("accuracy"), "passed": v.get("passed")}
    return out


def spread(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """mean, min and max over seeds of every file's validation and eval accuracy."""
    files = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    out: dict[str, dict[str, dict[str, float]]] = {}
    for f in files:
        out[f] = {}
        for metric in ("val_accuracy", "accuracy"):
            vals = [r[f][metric] for r in rows if isinstance(r.get(f), dict) and r[f].get(metric) is not None]
            if vals:
                out[f][metric] = {"mean": statistics.fmean(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
    return out


def table(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    seeds = [str(r["seed"]) for r in rows]
    head = ["file"] + [f"seed {s} val / eval" for s in seeds] + ["eval mean (min-max)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f, m in summary.items():
        cells = [f]
        for r in rows:
            v = r.get(f) or {}
            cells.append(f"{100 * v['val_accuracy']:.2f} / {100 * v['accuracy']:.2f}" if v.get("accuracy") is not None else "-")
        e = m.get("accuracy")
        cells.append(f"{100 * e['mean']:.2f} % ({100 * e['min']:.2f}-{100 * e['max']:.2f})" if e else "-")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pipelines", nargs="+", default=list(DEFAULT), help="seed pipelines in pipelines.yaml (default: %(default)s)")
    ap.add_argument("--file", type=Path, default=REPO_ROOT / "pipelines.yaml", help="the pipelines file")
    ap.add_argument("--cache-dir", type=Path, default=None, help="artifact cache (default: .albert-edge or $ALBERT_EDGE_CACHE)")
    ap.add_argument("--no-run", action="store_true", help="only read what the cache holds")
    ap.add_argument("--out", type=Path, default=OUT, help="where seed_spread.{json,md} go (default: %(default)s)")
    args = ap.parse_args(argv)
    cache = args.cache_dir or default_cache_dir()
    rows = [seed_rows(p, cache, not args.no_run, args.file) for p in args.pipelines]
    summary = spread(rows)
    md = table(rows, summary)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seed_spread.json").write_text(json.dumps({"seeds": rows, "spread": summary}, indent=2))
    (args.out / "seed_spread.md").write_text(
        "# sst2-mobile: seed spread of prune recovery and int8\n\n"
        f"`python benchmarks/seed_spread.py`; validation rows choose, eval (SST-2 dev) is reported.\n\n{md}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
