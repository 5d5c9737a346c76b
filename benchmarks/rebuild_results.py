"""Regenerate the committed results under benchmarks/results/ with one command and one run id.

For each pipeline: run it from its first benchmark step on (earlier stages come from the cache,
or are built when missing), so every benchmark row is measured now; write its report into
benchmarks/results/<pipeline>/; for sst2-mobile also run the A/B/C comparison into
benchmarks/results/<pipeline>/compare/. Every row carries the same run id and commit, and the
result is checked with results_check before it replaces the old directory.

    python -m benchmarks.rebuild_results                      # every pipeline with committed results
    python -m benchmarks.rebuild_results -p smoke --out /tmp/results   # a quick try
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from albert_edge.config import Pipeline, load_pipeline, validate_file
from albert_edge.paths import default_cache_dir
from benchmarks.provenance import REPO_ROOT, RUN_ID_ENV, git_state
from benchmarks.results_check import read_rows, tree_problems

DEFAULT_PIPELINES = ("sst2-mobile", "albert-base-v2-latency")
COMPARED = {"sst2-mobile"}  # pipelines whose artifacts the A/B/C comparison reads


def first_benchmark_step(pipeline: Pipeline) -> str | None:
    return next((s.id for s in pipeline.steps if s.stage == "benchmark"), None)


def rebuild_one(pipeline: Pipeline, cache_dir: Path, out_root: Path, rounds: int, compare: bool, file: str) -> int:
    """Run, report and (optionally) compare one pipeline into a fresh directory; 0 when done."""
    from albert_edge.runner import run_pipeline
    from benchmarks.report import collect_results, write_report

    start = first_benchmark_step(pipeline)
    if start is None:
        print(f"error: {pipeline.name} has no benchmark step: nothing to rebuild", file=sys.stderr)
        return 2
    print(f"== {pipeline.name}: running from `{start}` (earlier stages from the cache when built)", file=sys.stderr)
    run = run_pipeline(pipeline, cache_dir, from_step=start)
    if run.exit_code:
        print(f"error: {pipeline.name} failed: {run.error}; {out_root / pipeline.name} left as it was", file=sys.stderr)
        return run.exit_code
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{pipeline.name}-", dir=out_root))
    try:
        stage = tmp / pipeline.name
        write_report(collect_results(run.run_dir), stage, f"{pipeline.name}: benchmark report")
        if compare:
            from benchmarks import compare_sst2

            rc = compare_sst2.main(["--file", file, "--pipeline", pipeline.name, "--cache-dir", str(cache_dir),
                                    "--out", str(stage / "compare"), "--rounds", str(rounds)])
            if rc == 2:
                return rc  # 1 (a target missed) is a result, and is written
        problems = tree_problems(tmp, {pipeline.name})
        if problems:
            print("error: the rebuilt results do not pass the results check:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 1
        final = out_root / pipeline.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(stage, final)
        rows = read_rows(final / "results.jsonl")
        print(f"{pipeline.name}: {len(rows)} rows of run {rows[0].get('run_id')} -> {final}", file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--file", default=str(REPO_ROOT / "pipelines.yaml"))
    p.add_argument("-p", "--pipeline", action="append", help=f"repeatable (default: {', '.join(DEFAULT_PIPELINES)})")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the A/B/C comparison")
    p.add_argument("--no-compare", action="store_true", help="skip the A/B/C comparison")
    args = p.parse_args(argv)
    names = args.pipeline or list(DEFAULT_PIPELINES)
    known = {pl.name for pl in validate_file(args.file)}
    unknown = [n for n in names if n not in known]
    if unknown:
        p.error(f"not in {args.file}: {', '.join(unknown)}")
    git = git_state()
    if git["git_dirty"]:
        print("warning: the checkout has uncommitted changes: the results check will reject these rows", file=sys.stderr)
    # one id for every row of every pipeline rebuilt by this command, children included
    os.environ.setdefault(RUN_ID_ENV, f"rebuild-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{(git['git_commit'] or 'nogit')[:8]}")
    from albert_edge.cli import quiet_libraries

    quiet_libraries()
    cache = args.cache_dir or default_cache_dir()
    rc = 0
    for name in names:
        rc = max(
            rc,
            rebuild_one(load_pipeline(args.file, name), cache, args.out, args.rounds, name in COMPARED and not args.no_compare, args.file),
        )
    print(f"run id: {os.environ[RUN_ID_ENV]}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
