"""`report`: one benchmark report (benchmarks.report) from every benchmark of the run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from albert_edge.contract import StageContext, StageError
from albert_edge.registry import stage
from albert_edge.schema import require
from benchmarks.harness import RESULTS, read_results
from benchmarks.report import DEFAULT_CV_THRESHOLD, DEFAULT_TITLE, write_report


@dataclass(frozen=True)
class ReportConfig:
    """Collect every benchmark of the run into one report."""

    title: str = DEFAULT_TITLE
    cv_threshold: float = DEFAULT_CV_THRESHOLD

    def check(self) -> None:
        require(0 < self.cv_threshold < 10, "cv_threshold", "a coefficient of variation such as 0.15")


@stage("report", config=ReportConfig, version="1", inputs=("*",), output="report")
def report_stage(ctx: StageContext[ReportConfig]) -> dict[str, Any]:
    """report.md + self-contained report.html + plots + results.jsonl/csv from every benchmark."""

    rows: list[dict[str, Any]] = []
    for art in ctx.inputs["*"]:
        if art.kind == "bench" and (art.path / RESULTS).is_file():
            rows += read_results(art.path / RESULTS)
    if not rows:
        raise StageError("no benchmark results to report: add a `benchmark` step before `report`")
    write_report(rows, ctx.out_dir, ctx.config.title, ctx.config.cv_threshold)
    ctx.log.info("  report: %s", ctx.out_dir / "report.html")
    ctx.info["report"] = "report.html"
    return {
        "rows": len(rows),
        "noisy": sum("noisy" in r["flags"] for r in rows),
        "int8_slower": sum("int8-slower-than-fp32" in r["flags"] for r in rows),
    }
