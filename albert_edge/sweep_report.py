"""sweeps/<name>/report.md with PNG plots: validation accuracy against p50 latency and against
file size, the Pareto front (over the sweep's objectives) marked, and the hand-tuned pipeline
(the baseline trial) marked. Plots need matplotlib; without it the report says so."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from albert_edge.pareto import violations
from albert_edge.sweepspace import SweepSpec


def _fmt(v: Any, spec: str = ".3f", scale: float = 1.0) -> str:
    return format(v * scale, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "-"


def _plot(rows: list[dict[str, Any]], front_ids: set[str], x: str, xlabel: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [
        r
        for r in rows
        if r.get("status") == "ok" and isinstance(r.get(x), (int, float)) and isinstance(r.get("val_accuracy"), (int, float))
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    others = [r for r in ok if r["trial"] not in front_ids and not r.get("baseline")]
    front = sorted((r for r in ok if r["trial"] in front_ids), key=lambda r: r[x])
    ax.scatter([r[x] for r in others], [100 * r["val_accuracy"] for r in others], c="#999999", label="trial", zorder=2)
    if front:
        ax.plot([r[x] for r in front], [100 * r["val_accuracy"] for r in front], "o-", c="#d62728", label="Pareto front", zorder=3)
    for r in ok:
        if r.get("baseline"):
            ax.scatter(
                [r[x]], [100 * r["val_accuracy"]], marker="*", s=220, c="#1f77b4", edgecolors="k", label="hand-tuned pipeline", zorder=4
            )
    for r in ok:
        ax.annotate(
            "hand-tuned" if r.get("baseline") else str(r["trial"])[:6],
            (r[x], 100 * r["val_accuracy"]),
            fontsize=6,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(rows: list[dict[str, Any]], spec: SweepSpec, pareto: dict[str, Any], out_dir: Path, constraints: dict[str, Any],
                 round_rows: list[dict[str, Any]] | None = None) -> Path:
    front_ids = {str(r["trial"]) for r in pareto["front"]}
    lines = [
        f"# Sweep {out_dir.name}",
        "",
        f"Strategy {spec.strategy}; objectives {', '.join(spec.objectives)}; {pareto['trials']} trials, {pareto['ok']} finished. "
        "Selection reads validation accuracy (held-out rows carved from train); dev accuracy is reported only. "
        f"Latency: p50 at real lengths, batch 1, on `{spec.measure.device}`, each file in a fresh process "
        "while no sweep build ran on that machine "
        "(work outside the sweep is not held back: `load_1m_at_measure` in trials.jsonl shows the load average then).",
        "",
    ]
    if any(r.get("random_weights") for r in rows):
        lines += ["**Random-weight model: accuracies are meaningless; latency and size only.**", ""]
    plots = []
    try:
        for x, label, fname in (
            ("p50_ms", "p50 latency at real lengths (ms)", "accuracy_vs_latency.png"),
            ("size_mb", "file size (MB)", "accuracy_vs_size.png"),
        ):
            _plot(rows, front_ids, x, label, out_dir / fname)
            plots.append(fname)
    except ImportError:
        lines += ["(matplotlib is not installed: no plots; `pip install matplotlib`)", ""]
    lines += [f"![{p.removesuffix('.png').replace('_', ' ')}]({p})" for p in plots]
    lines += ["", "The front is over every objective of the sweep, so in one two-axis plot a front point may look dominated.", ""]
    params = list(spec.params)
    head = ["trial", *params, "file", "val acc %", "drop pts", "dev acc %", "p50 ms", "size MB", "peak RSS MB", "front", "constraints"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    def order(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r.get("status") != "ok", -(r.get("val_accuracy") or 0), r.get("p50_ms") or 0)

    for r in sorted(rows, key=order):
        name = "hand-tuned" if r.get("baseline") else str(r.get("trial"))
        if r.get("status") != "ok":
            lines.append("| " + " | ".join([name, *[str(r.get("params", {}).get(p, "-")) for p in params],
                                            f"FAILED: {str(r.get('error'))[:120]}".replace("|", "/"), *["-"] * 8]) + " |")
            continue
        miss = violations(r, constraints)
        lines.append("| " + " | ".join([
            name, *[str(r.get("params", {}).get(p, "(as written)")) for p in params], str(r.get("file")),
            _fmt(r.get("val_accuracy"), ".2f", 100), _fmt(r.get("accuracy_drop_points"), ".2f"), _fmt(r.get("dev_accuracy"), ".2f", 100),
            _fmt(r.get("p50_ms")), _fmt(r.get("size_mb"), ".2f"), _fmt(r.get("rss_peak_mb"), ".0f"),
            "yes" if str(r.get("trial")) in front_ids else "", "; ".join(miss) if miss else ("met" if constraints else "-"),
        ]) + " |")
    lines += _versus_baseline(rows, round_rows or [])
    lines += ["", "Stage times per trial (seconds; `reused` came from the cache):", ""]
    for r in rows:
        stages = ", ".join(f"{s['step']} {s['status']} {s['seconds']:.1f}" for s in r.get("stages") or [])
        lines.append(f"- {r.get('trial')}: {stages or '-'}; measure {_fmt(r.get('measure_s'), '.1f')} s")
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _versus_baseline(rows: list[dict[str, Any]], round_rows: list[dict[str, Any]]) -> list[str]:
    """The front re-timed against the hand-tuned pipeline in interleaved rounds (sweep --rounds)."""
    from albert_edge.pareto import versus_baseline

    if not round_rows:
        return []
    verdicts = versus_baseline(rows, round_rows)
    n = max(int(r.get("round", 0)) for r in round_rows)
    if not verdicts:
        why = ("the hand-tuned pipeline is the whole front" if all(r.get("baseline") for r in round_rows)
               else "the hand-tuned pipeline was not among them")
        return ["", f"The front and the hand-tuned pipeline, re-timed in {n} interleaved round(s) (`rounds.jsonl`): no trial to judge "
                f"against the hand-tuned pipeline ({why})."]
    lines = ["", f"Against the hand-tuned pipeline, re-timed in {n} interleaved round(s) (`rounds.jsonl`; a speed-up is the hand-tuned "
             "p50 over the trial's in the same round; a trial dominates when its validation accuracy is at least the hand-tuned one's "
             "and it is faster in its worst round):", "",
             "| trial | params | val acc vs hand-tuned, points | speed-up per round | worst | dominates |", "|---|---|---|---|---|---|"]
    for v in sorted(verdicts, key=lambda v: -v["worst_speedup"]):
        per = ", ".join(f"{x:.2f}x" for x in v["speedup_by_round"].values())
        lines.append(f"| {v['trial']} | {v['params']} | {_fmt(v['val_points_vs_baseline'], '+.2f')} | {per} | "
                     f"{v['worst_speedup']:.2f}x | {'yes' if v['dominates'] else 'no'} |")
    return lines
