"""benchmarks/process_spread.py: the per-file spread of per-process latency."""

from __future__ import annotations

import pytest

from benchmarks.process_spread import main, spread


def _row(variant: str, seq: object, p50: float | None, rnd: int, error: str | None = None) -> dict[str, object]:
    return {"variant": variant, "seq_len": seq, "p50_ms": p50, "round": rnd, "error": error}


def test_spread_counts_slow_processes_per_file_and_length_in_round_order() -> None:
    rows = [_row("a", "real", 1.1, 3), _row("a", "real", 0.6, 1), _row("a", "real", 0.62, 2), _row("a", 128, 2.0, 1),
            _row("a", 128, 2.1, 2), _row("b", "real", None, 1, error="load failed"), _row("b", "real", 0.5, 2)]
    got = {(s["variant"], s["seq_len"]): s for s in spread(rows, slow=1.4)}
    real = got[("a", "real")]
    assert real["p50_ms"] == [0.6, 0.62, 1.1] and real["processes"] == 3
    assert real["slow_processes"] == 1 and real["max_over_min"] == pytest.approx(1.1 / 0.6)
    assert got[("a", "128")]["slow_processes"] == 0
    assert got[("b", "real")]["processes"] == 1  # the failed process is not a latency


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as err:
        main(["--processes", "1"])
    assert err.value.code == 2
    assert main(["-p", "no-such-pipeline"]) == 2
