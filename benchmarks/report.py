"""The benchmark report: report.md, a self-contained report.html (plots inlined as base64 PNG),
the plot files, results.jsonl and results.csv, from every bench artifact of a run.

Plots: accuracy against p50 latency with the Pareto front (one point per model file and
runtime), size and gzip size bars, latency distributions from the per-run timings.
"""

from __future__ import annotations

import base64
import csv
import html
import json
from pathlib import Path
from typing import Any

from albert_edge.stats import format_diff, paired_summary
from benchmarks.arm_matrix import sections as device_sections
from benchmarks.harness import RESULTS, flag_rows, read_results, write_results

PLOTS = ("pareto.png", "sizes.png", "latency.png")
DEFAULT_TITLE = "albert-edge benchmark report"
DEFAULT_CV_THRESHOLD = 0.15  # rows over it are flagged noisy (re-applied across all results)
TABLE_COLUMNS = (
    ("variant", "variant"), ("precision", "precision"), ("batch", "batch"), ("seq", "seq_len"), ("threads", "threads"), ("round", "round"),
    ("p50 ms", "p50_ms"), ("p90 ms", "p90_ms"), ("p99 ms", "p99_ms"), ("mean ms", "mean_ms"), ("std ms", "std_ms"), ("cv", "cv"),
    ("items/s", "throughput_per_s"), ("first ms", "first_ms"), ("load ms", "load_ms"), ("peak RSS MB", "rss_peak_mb"),
    ("RSS growth MB", "rss_growth_mb"), ("size MB", "size_bytes"), ("gzip MB", "gzip_bytes"), ("accuracy", "accuracy"),
    ("agreement", "agreement"), ("acc@128", "acc128"), ("flags", "flags"),
)


def seq_order(seq: Any) -> tuple[int, int]:
    """Fixed widths in order, then "real" (eval rows at their own lengths), then unknown."""
    if isinstance(seq, int):
        return (0, seq)
    return (1, 0) if seq == "real" else (2, 0)

def typical_ms(r: dict[str, Any]) -> float | None:
    """p50 when measured, else the mean (benchmark_model prints no median on old builds)."""
    return r.get("p50_ms") if r.get("p50_ms") is not None else r.get("mean_ms")


def _fmt(key: str, value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if key in ("size_bytes", "gzip_bytes"):
        return f"{value / 1e6:.2f}"
    if key in ("accuracy", "agreement", "acc128"):
        return f"{100 * value:.2f}%"
    if key == "flags":
        return ", ".join(value)
    if isinstance(value, float):
        return f"{value:.3g}" if key == "cv" else f"{value:.2f}"
    return str(value)


def _cell(r: dict[str, Any], key: str) -> str:
    if key == "acc128":
        return _fmt(key, (r.get("accuracy_fixed") or {}).get("128"))
    return _fmt(key, r.get(key))


def tables(rows: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, cells) per device and runtime; the same data feeds markdown and HTML."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r.get("device")), str(r.get("runtime"))), []).append(r)
    out = []
    for (device, runtime), rs in sorted(groups.items()):
        rs = sorted(
            rs,
            key=lambda r: (
                r.get("variant") or "",
                r.get("batch") or 0,
                seq_order(r.get("seq_len")),
                r.get("threads") or 0,
                r.get("round") or 0,
            ),
        )
        version = next((r.get("runtime_version") for r in rs if r.get("runtime_version")), None)
        title = f"{device} / {runtime}" + (f" {version}" if version else "")
        ok = [r for r in rs if not r.get("error")]
        body = [[_cell(r, key) for _, key in TABLE_COLUMNS] for r in ok]
        body += [
            [r.get("variant") or "-", r.get("precision") or "-", *["-"] * (len(TABLE_COLUMNS) - 3), f"error: {r['error']}"]
            for r in rs
            if r.get("error")
        ]
        out.append((title, [h for h, _ in TABLE_COLUMNS], body))
    return out


def paired_differences(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every non-fp32 file against its fp32 twin (same device, runtime, format, threads and round)
    on the same eval rows, with a paired 95 % interval: a bare difference of a few tenths of a
    point on 872 rows cannot tell a real loss from noise."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r.get("device"), r.get("runtime"), r.get("format"), r.get("threads"), r.get("round"))

    first: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r.get("correct_real") and not r.get("error"):
            first.setdefault((*key(r), r.get("variant")), r)
    twins = {key(r): r for r in first.values() if r.get("precision") == "fp32"}
    out = []
    for r in first.values():
        twin = twins.get(key(r))
        if r.get("precision") == "fp32" or twin is None or len(twin["correct_real"]) != len(r["correct_real"]):
            continue
        out.append({"device": r.get("device"), "runtime": r.get("runtime"), "variant": r.get("variant"), "vs": twin.get("variant"),
                    "round": r.get("round"), "accuracy": r.get("accuracy"), **paired_summary(r["correct_real"], twin["correct_real"])})
    return sorted(out, key=lambda d: (str(d["device"]), str(d["runtime"]), str(d["variant"]), d["round"] or 0))


def paired_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the paired-difference table (the same data for markdown and HTML)."""
    header = ["device", "runtime", "file", "vs", "accuracy", "difference, points [95 % CI] McNemar p", "rows only file / only vs right"]
    body = [
        [
            str(d["device"]),
            str(d["runtime"]),
            str(d["variant"]) + (f" (round {d['round']})" if d["round"] else ""),
            str(d["vs"]),
            _fmt("accuracy", d["accuracy"]),
            format_diff(d),
            f"{d['only_a_right']} / {d['only_b_right']}",
        ]
        for d in paired_differences(rows)
    ]
    return header, body


def provenance(rows: list[dict[str, Any]]) -> list[str]:
    """One line per distinct (run, commit, pipeline, config) among the rows: a report that mixes
    runs says so at the top."""
    seen: dict[tuple[Any, ...], int] = {}
    for r in rows:
        k = (r.get("run_id"), r.get("git_commit"), r.get("git_dirty"), r.get("pipeline"), r.get("config_hash"))
        seen[k] = seen.get(k, 0) + 1
    return [f"run {rid or 'unstamped'}, commit {(commit or '?')[:12]}{' (dirty)' if dirty else ''}, pipeline {pipe or '-'}, "
            f"config {cfg or '-'}: {n} rows" for (rid, commit, dirty, pipe, cfg), n in seen.items()]


def stamps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault(str(r.get("device")), r.get("stamp") or {})
    return list(seen.values())


def notes(rows: list[dict[str, Any]], cv_threshold: float) -> list[str]:
    """Plain-words warnings the reader must see before trusting a number."""
    out = []
    if any(r.get("random_weights") for r in rows):
        out.append("Some models have RANDOM weights: their latency and memory are real, their accuracy is meaningless.")
    if any(r.get("emulated") for r in rows):
        out.append("Some rows ran under emulation (qemu): compare them only with each other, not with real hardware.")
    noisy = [r for r in rows if "noisy" in (r.get("flags") or ())]
    if noisy:
        out.append(
            f"{len(noisy)} row(s) have a coefficient of variation over {cv_threshold:g} (flag `noisy`): the machine was busy; rerun "
            "before trusting them."
        )
    for r in rows:
        if "int8-slower-than-fp32" in (r.get("flags") or ()):
            out.append(
                f"int8 slower than fp32: {r['variant']} on {r['device']} / {r['runtime']} (batch {r.get('batch')}, seq {r.get('seq_len')}) "
                f"runs at {r.get('speedup_vs_fp32', 0):.2f}x the fp32 speed; keep the fp32 file on this device."
            )
    failed = sorted(
        {f"{r['variant']} on {r['device']} / {r['runtime']}" for r in rows if (r.get("device_tests") or {}).get("verdict") == "fail"}
    )
    if failed:
        out.append(f"device_tests FAILED (or checked nothing) for {len(failed)} file(s): {'; '.join(failed[:12])}.")
    differ = sorted(
        {
            f"{r['variant']} on {r['device']} / {r['runtime']} ({100 * r['host_agreement']:.1f} %)"
            for r in rows
            if "differs-from-host" in (r.get("flags") or ())
        }
    )
    if differ:
        out.append(f"Answers differ from this host's beyond the parity threshold: {'; '.join(differ[:12])}.")
    refused = sorted(
        {
            str(r.get("device"))
            for r in rows
            if str(r.get("error") or "").startswith("device unavailable") and "refused" in str(r.get("error"))
        }
    )
    if refused:
        out.append(f"Refused devices (see their error rows): {', '.join(refused)}.")
    errors = [r for r in rows if r.get("error")]
    if errors:
        out.append(f"{len(errors)} measurement(s) failed or were skipped; see the error rows.")
    return out


# ---------------------------------------------------------------- plots


def _points(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per (device, variant, runtime): the batch-1 row at its smallest timed length."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r.get("error") or typical_ms(r) is None or r.get("batch") not in (1, None):
            continue
        key = (r.get("device"), r.get("variant"), r.get("runtime"), r.get("threads"))
        if key not in best or seq_order(r.get("seq_len")) < seq_order(best[key].get("seq_len")):
            best[key] = r
    return list(best.values())


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both lower latency and higher accuracy."""
    front = []
    for i, (lat, acc) in enumerate(points):
        dominated = any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for j, (l2, a2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


RUNTIME_STYLE = {"onnxruntime": ("o", "tab:blue"), "litert": ("s", "tab:orange"), "tflite-runtime": ("D", "tab:red"),
                 "torch": ("^", "tab:green"), "benchmark_model": ("v", "tab:purple")}


def _log_axis(ax: Any) -> None:
    """Log x axis with plain numbers (0.5, 1, 2) rather than 5x10^-1."""
    from matplotlib.ticker import FormatStrFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="minor", labelsize=7)


def plot_pareto(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    pts = [r for r in _points(rows) if r.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=110)
    if not pts:
        ax.text(0.5, 0.5, "no accuracy measured (no labelled eval inputs)", ha="center", va="center", transform=ax.transAxes)
    else:
        xy = [(typical_ms(r), 100 * r["accuracy"]) for r in pts]
        for k, (r, (x, y)) in enumerate(sorted(zip(pts, xy), key=lambda p: p[1])):
            rt = r.get("runtime")
            marker, color = RUNTIME_STYLE.get(rt, ("o", "grey"))
            ax.scatter(x, y, marker=marker, color=color, s=55, label=rt, zorder=3)
            ax.annotate(f"{r['variant']}", (x, y), textcoords="offset points", xytext=(6, 5 + 9 * (k % 3)), fontsize=7)
        front = pareto_front(xy)
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "k--", lw=1, label="Pareto front", zorder=2)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="best")
        teacher = next((r.get("teacher_accuracy") for r in rows if r.get("teacher_accuracy") is not None), None)
        if teacher is not None:
            ax.axhline(100 * teacher, color="grey", lw=0.8, ls=":")
            ax.text(ax.get_xlim()[0], 100 * teacher, " teacher", va="bottom", fontsize=7, color="grey")
        _log_axis(ax)
    ax.set_xlabel("p50 latency, batch 1 (ms, log scale)")
    ax.set_ylabel("accuracy on eval (%)")
    ax.set_title("Accuracy vs latency (up and left is better)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_sizes(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    sizes: dict[str, tuple[float, float]] = {}
    for r in rows:
        if r.get("size_bytes"):
            sizes.setdefault(str(r.get("variant")), (r["size_bytes"] / 1e6, (r.get("gzip_bytes") or 0) / 1e6))
    names = sorted(sizes, key=lambda n: -sizes[n][0])
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * max(len(names), 2) + 1.5), dpi=110)
    y = np.arange(len(names))
    ax.barh(y - 0.2, [sizes[n][0] for n in names], height=0.4, label="on disk")
    ax.barh(y + 0.2, [sizes[n][1] for n in names], height=0.4, label="gzip")
    for i, n in enumerate(names):
        ax.text(sizes[n][0], i - 0.2, f" {sizes[n][0]:.2f}", va="center", fontsize=7)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MB")
    ax.set_title("Model size")
    ax.legend(fontsize=8)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_latency(rows: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib.pyplot as plt

    pts = [r for r in _points(rows) if r.get("times_ms")]
    pts.sort(key=lambda r: typical_ms(r) or 0)
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * max(len(pts), 2) + 1.5), dpi=110)
    if pts:
        ax.boxplot([r["times_ms"] for r in pts], vert=False, showfliers=True, flierprops={"markersize": 2})
        ax.set_yticks(range(1, len(pts) + 1), [f"{r['variant']} / {r['runtime']} (s{r.get('seq_len')})" for r in pts], fontsize=8)
        _log_axis(ax)
    else:
        ax.text(0.5, 0.5, "no per-run timings recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("latency per run, batch 1 (ms, log scale)")
    ax.set_title("Latency distribution after warm-up")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------- writers


def csv_row(r: dict[str, Any]) -> dict[str, Any]:
    """Flat columns: nested stamp and fixed-length accuracy spread out, per-run timings dropped."""
    flat: dict[str, Any] = {}
    for k, v in r.items():
        if k in ("times_ms", "correct_real"):
            continue
        if isinstance(v, dict):
            for k2, v2 in v.items():
                flat[f"{k}_{k2}"] = v2
        elif isinstance(v, list):
            flat[k] = ";".join(map(str, v))
        else:
            flat[k] = v
    return flat


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    flat = [csv_row(r) for r in rows]
    cols: list[str] = []
    for f in flat:
        cols += [c for c in f if c not in cols]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(flat)
    return path


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(lines)


def _stamp_line(s: dict[str, Any]) -> str:
    keys = ("device", "arch", "cpu_model", "cores", "os", "python", "numpy", "emulated")
    parts = [f"{k}: {s.get(k)}" for k in keys if s.get(k) is not None]
    if isinstance(s.get("isa"), dict):
        parts.append("isa: " + " ".join(("+" if on else "-") + name for name, on in s["isa"].items()))
    if s.get("qemu"):
        parts.append(f"emulator: {s['qemu']} -cpu {s.get('qemu_cpu')}")
    if s.get("libraries"):
        parts.append("libraries: " + " ".join(f"{k} {v}" for k, v in s["libraries"].items()))
    return ", ".join(parts)


def render_markdown(rows: list[dict[str, Any]], title: str, cv_threshold: float) -> str:
    parts = [f"# {title}", "", f"{len(rows)} measurement rows. Latency in ms after warm-up; every row ran in its own fresh process.", ""]
    parts += ["## Run", ""] + [f"- {line}" for line in provenance(rows)] + [""]
    parts += ["## Devices", ""] + [f"- {_stamp_line(s)}" for s in stamps(rows)] + [""]
    if ns := notes(rows, cv_threshold):
        parts += ["## Read this first", ""] + [f"- {n}" for n in ns] + [""]
    parts += ["## Plots", ""] + [f"![{p}]({p})" for p in PLOTS] + [""]
    header, body = paired_table(rows)
    if body:
        parts += ["## Accuracy against the fp32 twin (paired over the same eval rows)", "", _md_table(header, body), ""]
    for t, header, body in device_sections(rows):
        parts += [f"## {t}", "", _md_table(header, body), ""]
    for t, header, body in tables(rows):
        parts += [f"## {t}", "", _md_table(header, body), ""]
    return "\n".join(parts)


def render_html(rows: list[dict[str, Any]], title: str, cv_threshold: float, plot_dir: Path) -> str:
    """One file with everything inlined: it can be mailed or attached to a CI run."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>", f"<title>{esc(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px;margin-bottom:2em}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "th{background:#f2f2f2}.note{background:#fff6d5;padding:.5em 1em}img{max-width:100%;margin:1em 0}</style></head><body>",
        f"<h1>{esc(title)}</h1><p>{len(rows)} measurement rows. Latency in ms after warm-up; every row ran in its own fresh process.</p>",
        "<h2>Run</h2><ul>" + "".join(f"<li>{esc(line)}</li>" for line in provenance(rows)) + "</ul>",
        "<h2>Devices</h2><ul>" + "".join(f"<li>{esc(_stamp_line(s))}</li>" for s in stamps(rows)) + "</ul>",
    ]
    if ns := notes(rows, cv_threshold):
        parts.append("<h2>Read this first</h2><div class='note'><ul>" + "".join(f"<li>{esc(n)}</li>" for n in ns) + "</ul></div>")
    parts.append("<h2>Plots</h2>")
    for p in PLOTS:
        data = base64.b64encode((plot_dir / p).read_bytes()).decode("ascii")
        parts.append(f"<img alt='{p}' src='data:image/png;base64,{data}'>")
    pheader, pbody = paired_table(rows)
    tabled = (
        ([("Accuracy against the fp32 twin (paired over the same eval rows)", pheader, pbody)] if pbody else [])
        + device_sections(rows)
        + tables(rows)
    )
    for t, header, body in tabled:
        parts.append(f"<h2>{esc(t)}</h2><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body]
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    rows: list[dict[str, Any]], out_dir: Path, title: str = DEFAULT_TITLE, cv_threshold: float = DEFAULT_CV_THRESHOLD
) -> dict[str, Path]:
    """Every report file into out_dir; returns name -> path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = flag_rows(rows, cv_threshold)
    files = {
        "pareto.png": plot_pareto(rows, out_dir / "pareto.png"),
        "sizes.png": plot_sizes(rows, out_dir / "sizes.png"),
        "latency.png": plot_latency(rows, out_dir / "latency.png"),
        "results.jsonl": write_results(rows, out_dir),
        "results.csv": write_csv(rows, out_dir / "results.csv"),
    }
    (out_dir / "report.md").write_text(render_markdown(rows, title, cv_threshold))
    (out_dir / "report.html").write_text(render_html(rows, title, cv_threshold, out_dir))
    files.update({"report.md": out_dir / "report.md", "report.html": out_dir / "report.html"})
    return files


def collect_results(path: Path) -> list[dict[str, Any]]:
    """Rows from a results.jsonl, a bench artifact, a directory holding results.jsonl, or a run
    directory (every benchmark step in its summary.json)."""
    path = Path(path)
    if path.is_file():
        return read_results(path)
    if (path / RESULTS).is_file():
        return read_results(path / RESULTS)
    summary = path / "summary.json"
    if summary.is_file():
        rows: list[dict[str, Any]] = []
        for step in json.loads(summary.read_text()).get("steps", []):
            art = step.get("artifact")
            if step.get("stage") == "benchmark" and art and (Path(art) / RESULTS).is_file():
                rows += read_results(Path(art) / RESULTS)
        return rows
    raise FileNotFoundError(f"{path}: no results.jsonl, bench artifact or run directory here")


def cli_report(args: Any) -> int:
    """`albert-edge report RUN [--out DIR]`: 0 ok, 2 nothing to report."""
    import sys

    try:
        rows = collect_results(args.run)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:  # JSON or UTF-8 errors: not a results file or run directory
        print(f"error: {args.run}: not benchmark results ({type(err).__name__}: {err})", file=sys.stderr)
        return 2
    if not rows:
        print(f"error: {args.run}: no benchmark rows (run `albert-edge bench` first)", file=sys.stderr)
        return 2
    base = Path(args.run)
    out = Path(args.out) if args.out else (base.parent if base.is_file() else base) / "report"
    files = write_report(rows, out)
    print(f"{len(rows)} rows -> {files['report.md']} and {files['report.html']}")
    return 0
