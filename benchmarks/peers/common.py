"""The pure-Python part of the peer comparison: which peers exist, the host ISA an ORT
quantization config should target, reading a recipe's peer.json into measurable files, one
table row per system, the two targets, and the markdown. No torch, no runtime, no subprocess:
unit-tested on its own (tests/test_peers.py).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from albert_edge.stats import format_diff, paired_summary

PEERS = ("optimum", "olive", "executorch", "aiedge")
TOOL_NAMES = {"optimum": "HF Optimum (ONNX Runtime)", "olive": "Microsoft Olive", "executorch": "PyTorch ExecuTorch (XNNPACK)",
              "aiedge": "Google AI Edge (litert-torch + ai-edge-quantizer)", "albert-edge": "albert-edge", "torch": "PyTorch eager"}
PEER_DIR = Path(__file__).resolve().parent
REPO_ROOT = PEER_DIR.parents[1]
TARGETS = {
    "speedup_vs_best_teacher_peer_x": 3.0,  # (1) shipped file vs the fastest peer file of the teacher, p50 at real lengths
    "accuracy_within_points_of_teacher": 1.0,  # (1) lower end of the paired 95 % interval of (shipped - teacher)
    "speed_vs_best_student_int8_peer_x": 1.0,  # (2) albert-edge int8 vs the fastest peer int8 of the same fp32 student
}


def venv_python(peer: str, root: Path = REPO_ROOT) -> Path:
    return root / ".peers" / peer / "bin" / "python"


def recipe_path(peer: str) -> Path:
    return PEER_DIR / peer / "recipe.py"


def host_isa(cpu_flags: str | set[str]) -> str:
    """The ORT AutoQuantizationConfig that fits an x86 host: avx512_vnni, avx512 or avx2
    (from /proc/cpuinfo flags). avx2 also stands for anything older: ORT has no lower config."""
    flags = set(cpu_flags.split()) if isinstance(cpu_flags, str) else set(cpu_flags)
    if "avx512_vnni" in flags or "avx512vnni" in flags:
        return "avx512_vnni"
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512"
    return "avx2"


def read_cpu_flags(path: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("flags"):
                return line.split(":", 1)[1]
    except OSError:
        pass
    return ""


@dataclass
class PeerFile:
    """One model file a peer's recipe wrote, ready to measure."""

    system: str  # table label: peer/role/name
    peer: str
    role: str  # teacher | student
    name: str
    path: Path
    format: str  # onnx | tflite | pte
    precision: str
    seq_len: int | None
    tool_s: float | None
    arm_only: bool = False
    notes: list[str] = field(default_factory=list)


def read_peer_result(out_dir: Path) -> tuple[list[PeerFile], dict[str, Any]]:
    """The files of one recipe run (OUT/peer.json) and the record itself; ([], {...error}) when the
    recipe wrote nothing readable."""
    path = Path(out_dir) / "peer.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        return [], {"ok": False, "errors": [{"step": "recipe", "error": f"no readable {path.name} ({err})"}]}
    files = []
    for f in data.get("files") or []:
        files.append(
            PeerFile(
                f"{data['peer']}/{data['role']}/{f['name']}",
                data["peer"],
                data["role"],
                f["name"],
                Path(out_dir) / f["file"],
                f["format"],
                f["precision"],
                f.get("seq_len"),
                f.get("tool_s"),
                bool(f.get("arm_only")),
                list(data.get("notes") or []),
            )
        )
    return files, data


def failure_text(data: dict[str, Any]) -> str:
    errs = data.get("errors") or []
    return "; ".join(f"{e.get('step')}: {e.get('error')}" for e in errs) or "no model file written"


# ---------------------------------------------------------------- table


def summarise(rows: list[dict[str, Any]], systems: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One round's table: one row per system (its 128 and real-length rows merged), in the
    order of `systems` ({label: {role, tool, precision, size_bytes, tool_s, ...}}); a system with
    no usable row carries its error."""
    out = []
    for label, info in systems.items():
        mine = [r for r in rows if r.get("variant") == label]
        r128 = next((r for r in mine if r.get("seq_len") == 128 and not r.get("error")), None)
        real = next((r for r in mine if r.get("seq_len") == "real" and not r.get("error")), None)
        row: dict[str, Any] = {"system": label, **info}
        if r128 is None or real is None:
            err = next((r.get("error") for r in mine if r.get("error")), None) or info.get("error") or "not measured"
            out.append({**row, "error": err})
            continue
        row.update({
            "runtime": r128.get("runtime"), "runtime_version": r128.get("runtime_version"), "accuracy": real.get("accuracy"),
            "accuracy_128": (r128.get("accuracy_fixed") or {}).get("128"), "agreement": real.get("agreement"),
            "correct_real": real.get("correct_real"), "p50_128_ms": r128["p50_ms"], "p90_128_ms": r128["p90_ms"],
            "p50_real_ms": real["p50_ms"], "p90_real_ms": real["p90_ms"],
            "peak_rss_mb": max(r128.get("rss_peak_mb") or 0, real.get("rss_peak_mb") or 0),
            "rss_growth_mb": max(r128.get("rss_growth_mb") or 0, real.get("rss_growth_mb") or 0), "load_ms": r128.get("load_ms"),
        })
        out.append(row)
    return out


def median_table(tables: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each system's numbers as the median over rounds, with the range of both p50s."""
    out = []
    for i, first in enumerate(tables[0]):
        per = [t[i] for t in tables if not t[i].get("error")]
        if not per:
            out.append(dict(first))
            continue
        row = dict(per[0])
        for k, v in per[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and all(isinstance(t.get(k), (int, float)) for t in per):
                row[k] = statistics.median(t[k] for t in per)
        for k in ("p50_128_ms", "p50_real_ms"):
            row[k.replace("_ms", "_range")] = [min(t[k] for t in per), max(t[k] for t in per)]
        row["rounds"] = len(per)
        out.append(row)
    return out


# ---------------------------------------------------------------- targets


def _check(system: str, name: str, value: float | None, op: str, bound: float, target: str) -> dict[str, Any]:
    ok = value is not None and (value >= bound if op == ">=" else value <= bound)
    return {"system": system, "check": name, "value": None if value is None else round(value, 3), "op": op, "bound": bound,
            "target": target, "ok": bool(ok)}


def _fastest(table: list[dict[str, Any]], pred: Any) -> dict[str, Any] | None:
    ok = [t for t in table if not t.get("error") and pred(t)]
    return min(ok, key=lambda t: t["p50_real_ms"], default=None)


def _interval(mine: dict[str, Any], base: dict[str, Any]) -> dict[str, Any] | None:
    a, b = mine.get("correct_real"), base.get("correct_real")
    if not a or not b or len(a) != len(b):
        return None
    return paired_summary(a, b)


def check_targets(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Both targets for every albert-edge shipped file, from one round's table.

    (1) shipped file >= 3x faster (p50, real lengths) than the fastest peer file of the teacher,
        and the lower end of the paired 95 % interval of (shipped - teacher) >= -1.0 points.
    (2) shipped int8 at least as fast (p50, real lengths) as the fastest peer int8 file of the same
        fp32 student, and at equal or better accuracy than that file (point estimate; the paired
        interval is kept beside it).
    """
    by = {t["system"]: t for t in table}
    teacher = next((t for t in table if t.get("kind") == "teacher-reference" and not t.get("error")), None)
    best_t = _fastest(table, lambda t: t.get("kind") == "peer" and t.get("role") == "teacher")
    best_s = _fastest(
        table, lambda t: t.get("kind") == "peer" and t.get("role") == "student" and str(t.get("precision", "")).startswith("int8")
    )
    speed_x, acc_pts, s_x = (
        TARGETS[k] for k in ("speedup_vs_best_teacher_peer_x", "accuracy_within_points_of_teacher", "speed_vs_best_student_int8_peer_x")
    )
    checks = []
    for label, c in by.items():
        if c.get("kind") != "shipped":
            continue
        ok_c = not c.get("error")
        name_t = best_t["system"] if best_t else "no peer teacher file measured"
        v = best_t["p50_real_ms"] / c["p50_real_ms"] if (best_t and ok_c) else None
        checks.append(_check(label, "(1) p50 @real: fastest peer teacher file / shipped", v, ">=", speed_x, f">= {speed_x}x vs {name_t}"))
        iv = _interval(c, teacher) if (teacher and ok_c) else None
        checks.append(
            _check(
                label,
                "(1) accuracy vs teacher, lower 95 % bound (points)",
                iv["ci95_points"][0] if iv else None,
                ">=",
                -acc_pts,
                f">= -{acc_pts}" + (f" ({format_diff(iv)})" if iv else " (no paired rows)"),
            )
        )
        name_s = best_s["system"] if best_s else "no peer int8 student file measured"
        v2 = best_s["p50_real_ms"] / c["p50_real_ms"] if (best_s and ok_c) else None
        checks.append(_check(label, "(2) p50 @real: fastest peer int8 student / shipped", v2, ">=", s_x, f">= {s_x}x vs {name_s}"))
        iv2 = _interval(c, best_s) if (best_s and ok_c) else None
        d = (
            100 * (c["accuracy"] - best_s["accuracy"])
            if (best_s and ok_c and c.get("accuracy") is not None and best_s.get("accuracy") is not None)
            else None
        )
        checks.append(
            _check(label, "(2) accuracy - that peer file's (points)", d, ">=", 0.0, ">= 0" + (f" ({format_diff(iv2)})" if iv2 else ""))
        )
    return checks


def _margin(c: dict[str, Any]) -> float:
    if c["value"] is None:
        return float("-inf")
    return c["value"] - c["bound"] if c["op"] == ">=" else c["bound"] - c["value"]


def combine_rounds(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One check per (system, check) over rounds: median, the worst round, and met only when
    every round met it (the worst round holds)."""
    out = []
    for i, first in enumerate(rounds[0]):
        per = [r[i] for r in rounds]
        worst_i = min(range(len(per)), key=lambda k: _margin(per[k]))
        values = [c["value"] for c in per]
        known = [v for v in values if v is not None]
        out.append({**{k: v for k, v in first.items() if k not in ("value", "ok", "target")}, "values": values,
                    "median": round(statistics.median(known), 3) if known else None, "worst": per[worst_i]["value"],
                    "worst_round": worst_i + 1, "target": per[worst_i]["target"], "ok": all(c["ok"] for c in per)})
    return out


# ---------------------------------------------------------------- markdown


def _f(v: Any, fmt: str = ".2f", pct: bool = False) -> str:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-"
    return f"{100 * v:{fmt}}%" if pct else f"{v:{fmt}}"


def render(table: list[dict[str, Any]], checks: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    teacher = next((t for t in table if t.get("kind") == "teacher-reference" and not t.get("error")), None)
    head = (
        "| system | tool | role | precision | runtime | accuracy (real len) | vs teacher, points [95 % CI] p | acc @128 | agreement "
        "| size MB | "
        "p50 @128 ms (range) | p90 @128 ms | p50 real ms (range) | p90 real ms | peak RSS MB | load ms | tool s |"
    )
    lines = [head, "|" + "---|" * 17]
    for t in table:
        tool = TOOL_NAMES.get(t.get("tool", ""), t.get("tool", ""))
        if t.get("error"):
            lines.append(
                f"| {t['system']} | {tool} | {t.get('role', '-')} | {t.get('precision', '-')} | - | **not measured**: {t['error'][:300]} |"
                + " |" * 11
            )
            continue
        iv = _interval(t, teacher) if teacher and t is not teacher else None
        r128 = f" ({t['p50_128_range'][0]:.2f}-{t['p50_128_range'][1]:.2f})" if t.get("p50_128_range") else ""
        rreal = f" ({t['p50_real_range'][0]:.2f}-{t['p50_real_range'][1]:.2f})" if t.get("p50_real_range") else ""
        lines.append(
            f"| {t['system']} | {tool} | {t.get('role')} | {t.get('precision')} | {t.get('runtime')} {t.get('runtime_version') or ''} | "
            f"{_f(t.get('accuracy'), pct=True)} | {format_diff(iv) if iv else '-'} | {_f(t.get('accuracy_128'), pct=True)} | "
            f"{_f(t.get('agreement'), pct=True)} | {_f((t.get('size_bytes') or 0) / 1e6, '.1f')} | {_f(t.get('p50_128_ms'))}{r128} | "
            f"{_f(t.get('p90_128_ms'))} | {_f(t.get('p50_real_ms'))}{rreal} | {_f(t.get('p90_real_ms'))} | "
            f"{_f(t.get('peak_rss_mb'), '.0f')} | "
            f"{_f(t.get('load_ms'), '.0f')} | {_f(t.get('tool_s'), '.1f')} |"
        )
    lines += ["", "| shipped file | check | median | worst round | target | met (every round) |", "|---|---|---|---|---|---|"]
    for c in checks:
        worst = f"{c['worst']:g} (round {c['worst_round']})" if c.get("worst") is not None else "-"
        med = f"{c['median']:g}" if c.get("median") is not None else "-"
        lines.append(f"| {c['system']} | {c['check']} | {med} | {worst} | {c['target']} | {'yes' if c['ok'] else '**no**'} |")
    notes = meta.get("notes") or {}
    if notes:
        lines += ["", "Notes per peer (route, versions, what failed):", ""]
        lines += [f"- **{k}**: {v}" for k, v in notes.items()]
    lines += ["", f"Machine: {meta.get('machine')}; {meta.get('threads')} threads, batch 1; every file in its own fresh process "
              f"(benchmarks/measure.py), {meta.get('rounds')} interleaved round(s); {meta.get('date')}.",
              "Accuracy: the pipeline's eval rows (the bundle's eval.npz: held-out dev rows) at real lengths; paired bootstrap 95 % "
              "interval and McNemar's p against the teacher (PyTorch eager).",
              f"Command: `{meta.get('command')}`"]
    if meta.get("run_id"):
        lines.append(f"Run: `{meta['run_id']}`, commit `{meta.get('git_commit')}`{' (dirty)' if meta.get('git_dirty') else ''}.")
    return "\n".join(lines)


def arm_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per file run on the ARM device: accuracy on the sample, agreement and the largest
    logit difference with this host's run of the same file, or why it did not run."""
    out, seen = [], set()
    for r in rows:
        if r.get("seq_len") not in (None, "real", 128) or r.get("variant") in seen:
            continue
        seen.add(r.get("variant"))
        out.append({
            "system": r.get("variant"), "device": r.get("device"), "runtime": r.get("runtime"),
            "runtime_version": r.get("runtime_version"), "rows": r.get("eval_rows"), "accuracy": r.get("accuracy"),
            "host_accuracy": r.get("host_accuracy"), "host_agreement": r.get("host_agreement"),
            "host_max_abs_diff": r.get("host_max_abs_diff"),
            "error": r.get("error") or r.get("host_error"), "skipped": bool(r.get("skipped")),
        })
    return out


def render_arm(summary: list[dict[str, Any]], device: str) -> str:
    """The ARM section (from arm_summary): every ARM build and shipped file on the arm64 device beside this host."""
    lines = [f"ARM builds on `{device}` (accuracy and agreement only: latencies under emulation say nothing about a phone)", "",
             "| system | runtime | rows | accuracy on ARM | accuracy on this host | agreement with this host | max abs logit diff | note |",
             "|---|---|---|---|---|---|---|---|"]
    for a in summary:
        note = ("skipped: " if a["skipped"] else "") + str(a["error"])[:200] if a["error"] else ""
        lines.append(
            f"| {a['system']} | {a['runtime'] or '-'} {a['runtime_version'] or ''} | {a['rows'] or '-'} | {_f(a['accuracy'], pct=True)} | "
            f"{_f(a['host_accuracy'], pct=True)} | {_f(a['host_agreement'], pct=True)} | {_f(a['host_max_abs_diff'], '.3g')} | {note} |"
        )
    return "\n".join(lines)
