"""A pytest plugin shipped with the on-device suite: writes one JSON file of test outcomes
($ALBERT_EDGE_TEST_JSON) that benchmarks/devices/suite.py pulls back. Standard library only."""

from __future__ import annotations

import json
import os
import platform
from typing import Any

_results: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: Any) -> None:
    if report.when == "call" or report.outcome != "passed":
        msg = str(report.longrepr)[-2000:] if report.longrepr else ""
        outcome = "error" if report.failed and report.when != "call" else report.outcome
        _results.append(
            {"test": report.nodeid, "when": report.when, "outcome": outcome, "seconds": round(report.duration, 3), "message": msg}
        )


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = os.environ.get("ALBERT_EDGE_TEST_JSON")
    if path:
        counts: dict[str, int] = {}
        for r in _results:
            counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        with open(path, "w") as fh:
            json.dump({"exit_status": int(exitstatus), "arch": platform.machine(), "counts": counts, "tests": _results}, fh, indent=1)
