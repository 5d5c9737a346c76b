"""Issue-6 comparison, measured side by side in one run on one machine:

  A  the teacher, fp32, PyTorch eager
  B  what a user gets in one line: the teacher exported to ONNX (transformers' default `sdpa`
     attention), ORT basic pre-optimisation, onnxruntime `quantize_dynamic` (s8 weights)
  B-eager  the same with eager attention traced: a stronger baseline (faster in ORT), reported
     beside B so the ratios are not flattered by one export detail
  C  the sst2-mobile final artifact, in ONNX Runtime and in LiteRT

Every (model, runtime) runs in its own fresh process, one after the other (two runtimes in one
process slow each other ~2x). Prints one table, writes JSON + a report, checks the targets.

    python benchmarks/compare_sst2.py                       # after `albert-edge run -p sst2-mobile`
    python benchmarks/compare_sst2.py --runs 200 --out benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from albert_edge.cli import quiet_libraries
from albert_edge.config import load_pipeline
from albert_edge.paths import default_cache_dir
from albert_edge.runner import cached_artifacts
from benchmarks.harness import BenchConfig, Target, benchmark, bundle_targets, find_bundle
from benchmarks.report import write_report

TARGETS = {  # the targets, as ratios from this one run
    "accuracy_within_points_of_A": 1.0,
    "size_smaller_than_A_x": 10.0,
    "p50_128_lower_than_A_x": 8.0,
    "p50_128_lower_than_B_x": 3.0,
    "peak_rss_fraction_of_A": 1 / 3,
}


def build_baseline_b(model: Any, work: Path, attention: str = "sdpa") -> tuple[Path, dict[str, Any]]:
    """The one-line baseline from the teacher `model`: ONNX export (`attention` traced), ORT basic
    pre-optimisation, quantize_dynamic."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from compress.onnx_graph import matmul_report, preoptimize
    from export.onnx import export_onnx

    fp32 = work / f"teacher.{attention}.onnx"
    export_onnx(model, fp32, attention=attention)
    pre = preoptimize(fp32, work / f"teacher.{attention}.basic.onnx")
    out = work / f"teacher.{attention}.int8-dynamic.onnx"
    quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8)
    report = matmul_report(out).as_dict()
    return out, {"attention": attention, "fp32_onnx_bytes": fp32.stat().st_size, "matmuls": report}


def pick_c(bundle: Path) -> dict[str, Target]:
    """C: every int8 file of the bundle, labelled by runtime (C-onnx-dynamic, C-litert-dynamic, ...)."""
    every = bundle_targets(bundle)
    out = {f"C-{'onnx' if t.format == 'onnx' else 'litert'}-{t.precision.removeprefix('int8-')}": t
           for t in every if t.precision.startswith("int8")}
    if not any(k.startswith("C-onnx") for k in out) or not any(k.startswith("C-litert") for k in out):
        raise SystemExit(f"{bundle}: needs an int8 .onnx and an int8 .tflite file (found {[t.name for t in every]})")
    return dict(sorted(out.items()))


def row_for(rows: list[dict[str, Any]], variant: str, seq: Any) -> dict[str, Any]:
    for r in rows:
        if r.get("variant") == variant and r.get("seq_len") == seq and not r.get("error"):
            return r
    errors = [r.get("error") for r in rows if r.get("variant") == variant and r.get("error")]
    raise SystemExit(f"no measurement for {variant} at seq {seq}: {errors}")


def summarise(rows: list[dict[str, Any]], names: dict[str, str], sizes: dict[str, int]) -> list[dict[str, Any]]:
    out = []
    for label, variant in names.items():
        r128, real = row_for(rows, variant, 128), row_for(rows, variant, "real")
        out.append({
            "system": label, "variant": variant, "runtime": r128["runtime"],
            "accuracy": real.get("accuracy"), "accuracy_128": (r128.get("accuracy_fixed") or {}).get("128"),
            "agreement": real.get("agreement"), "size_mb": sizes[label] / 1e6,
            "p50_128_ms": r128["p50_ms"], "p90_128_ms": r128["p90_ms"], "p50_real_ms": real["p50_ms"], "p90_real_ms": real["p90_ms"],
            "peak_rss_mb": max(r128.get("rss_peak_mb") or 0, real.get("rss_peak_mb") or 0), "load_ms": r128.get("load_ms"),
            "cv_128": r128.get("cv"), "runs_128": r128.get("runs"),
        })
    return out


def check_targets(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {t["system"]: t for t in table}
    a, b = by["A"], by["B"]
    checks = []
    for c_label in [k for k in by if k.startswith("C-")]:
        c = by[c_label]
        drop = 100 * (a["accuracy"] - c["accuracy"])
        items = [
            ("accuracy drop vs A (points)", drop, drop <= TARGETS["accuracy_within_points_of_A"], f"<= {TARGETS['accuracy_within_points_of_A']}"),
            ("size: A / C", a["size_mb"] / c["size_mb"], a["size_mb"] / c["size_mb"] >= TARGETS["size_smaller_than_A_x"], f">= {TARGETS['size_smaller_than_A_x']}x"),
            ("p50 @128: A / C", a["p50_128_ms"] / c["p50_128_ms"], a["p50_128_ms"] / c["p50_128_ms"] >= TARGETS["p50_128_lower_than_A_x"], f">= {TARGETS['p50_128_lower_than_A_x']}x"),
            ("p50 @128: B / C", b["p50_128_ms"] / c["p50_128_ms"], b["p50_128_ms"] / c["p50_128_ms"] >= TARGETS["p50_128_lower_than_B_x"], f">= {TARGETS['p50_128_lower_than_B_x']}x"),
            # "at the real dev lengths, lower still": C is faster there than at 128, and both ratios still hold
            ("p50 @real < p50 @128 (ms)", c["p50_real_ms"], c["p50_real_ms"] < c["p50_128_ms"], f"< {c['p50_128_ms']:.2f}"),
            ("p50 @real: A / C", a["p50_real_ms"] / c["p50_real_ms"], a["p50_real_ms"] / c["p50_real_ms"] >= TARGETS["p50_128_lower_than_A_x"], f">= {TARGETS['p50_128_lower_than_A_x']}x"),
            ("p50 @real: B / C", b["p50_real_ms"] / c["p50_real_ms"], b["p50_real_ms"] / c["p50_real_ms"] >= TARGETS["p50_128_lower_than_B_x"], f">= {TARGETS['p50_128_lower_than_B_x']}x"),
            ("peak RSS: C / A", c["peak_rss_mb"] / a["peak_rss_mb"], c["peak_rss_mb"] / a["peak_rss_mb"] <= TARGETS["peak_rss_fraction_of_A"], "<= 0.333"),
        ]
        checks += [{"system": c_label, "check": n, "value": round(v, 3), "target": t, "ok": bool(ok), "issue_target": True} for n, v, ok, t in items]
        if "B-eager" in by:  # the same speed targets against the stronger baseline: shown, not the definition
            be = by["B-eager"]
            extra = [("p50 @128: B-eager / C", be["p50_128_ms"] / c["p50_128_ms"]), ("p50 @real: B-eager / C", be["p50_real_ms"] / c["p50_real_ms"])]
            checks += [{"system": c_label, "check": n, "value": round(v, 3), "target": f">= {TARGETS['p50_128_lower_than_B_x']}x (stronger B)",
                        "ok": bool(v >= TARGETS["p50_128_lower_than_B_x"]), "issue_target": False} for n, v in extra]
    return checks


def render(table: list[dict[str, Any]], checks: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    head = "| system | runtime | accuracy (real len) | acc @128 | size MB | p50 @128 ms | p90 @128 ms | p50 real ms | p90 real ms | peak RSS MB | load ms |"
    lines = [head, "|" + "---|" * 11]
    for t in table:
        acc128 = f"{100 * t['accuracy_128']:.2f}%" if isinstance(t["accuracy_128"], float) else "-"
        lines.append(f"| {t['system']} ({t['variant']}) | {t['runtime']} | {100 * t['accuracy']:.2f}% | {acc128} | {t['size_mb']:.1f} | "
                     f"{t['p50_128_ms']:.2f} | {t['p90_128_ms']:.2f} | {t['p50_real_ms']:.2f} | {t['p90_real_ms']:.2f} | {t['peak_rss_mb']:.0f} | {t['load_ms']:.0f} |")
    lines += ["", "| C | check | value | target | met |", "|---|---|---|---|---|"]
    lines += [f"| {c['system']} | {c['check']} | {c['value']:g} | {c['target']} | {'yes' if c['ok'] else '**no**'} |" for c in checks]
    lines += ["", f"Machine: {meta['machine']}; {meta['threads']} threads, batch 1; each runner in its own process; {meta['date']}.",
              f"Command: `{meta['command']}`"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--file", default="pipelines.yaml")
    p.add_argument("--pipeline", default="sst2-mobile")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--min-secs", type=float, default=2.0)
    args = p.parse_args(argv)
    quiet_libraries()
    pipe = load_pipeline(args.file, args.pipeline)
    done, why = cached_artifacts(pipe, args.cache_dir or default_cache_dir(), verify=True)
    arts = {s.id: a for s, a in done}
    bundle_art = next((a for _, a in reversed(done) if a.kind == "bundle"), None)
    teacher = arts.get(pipe.teacher or "teacher")
    if teacher is None or bundle_art is None:
        print(f"error: run `albert-edge run {args.file} -p {args.pipeline}` first ({why or 'no bundle'})", file=sys.stderr)
        return 2
    bundle = find_bundle(bundle_art.path)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="compare-sst2-") as tmp:
        from albert_edge.models import load_model

        teacher_model = load_model(teacher.model_dir)[0]
        b_file, b_info = build_baseline_b(teacher_model, Path(tmp), "sdpa")
        be_file, be_info = build_baseline_b(teacher_model, Path(tmp), "eager")
        del teacher_model  # A is measured in its own process from the saved weights
        cs = pick_c(bundle)
        targets = [
            Target("A-teacher-torch-fp32", "torch", "fp32", [teacher.model_dir], [None], {}),
            Target("B-teacher-onnx-int8-dynamic", "onnx", "int8-dynamic", [b_file], [None], {}),
            Target("B-eager-teacher-onnx-int8-dynamic", "onnx", "int8-dynamic", [be_file], [None], {}),
            *cs.values(),
        ]
        cfg = BenchConfig(devices=("local",), threads=(args.threads,), runs=args.runs, min_secs=args.min_secs, seq_lens=(128,),
                          batch_sizes=(1,), runtimes=("torch", "onnxruntime", "litert"), accuracy=True, accuracy_seq_lens=(128,))
        t0 = time.time()
        rows = benchmark(targets, bundle / "eval.npz", cfg, {"pipeline": "compare-sst2"}, None)
        sizes = {"A": (teacher.model_dir / "model.safetensors").stat().st_size, "B": b_file.stat().st_size, "B-eager": be_file.stat().st_size,
                 **{k: t.size_bytes for k, t in cs.items()}}
    names = {"A": targets[0].name, "B": targets[1].name, "B-eager": targets[2].name, **{k: t.name for k, t in cs.items()}}
    table = summarise(rows, names, sizes)
    checks = check_targets(table)
    stamp = rows[0].get("stamp") or {}
    meta = {"machine": f"{stamp.get('arch', platform.machine())} {stamp.get('cpu_model')} ({stamp.get('cores')} cores, {stamp.get('os')})", "threads": args.threads,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "seconds": round(time.time() - t0, 1),
            "command": "python benchmarks/compare_sst2.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "teacher": str(teacher.path.name), "bundle": str(bundle_art.path.name), "baseline_b": b_info, "baseline_b_eager": be_info}
    text = render(table, checks, meta)
    print(text)
    (args.out / "sst2_compare.json").write_text(json.dumps({"meta": meta, "table": table, "checks": checks, "rows": rows}, indent=2, default=str))
    (args.out / "sst2_compare.md").write_text("# sst2-mobile vs the teacher and the one-line int8 baseline\n\n" + text + "\n")
    write_report(rows, args.out / "report", "sst2-mobile: A (teacher) vs B (one-line int8) vs C (albert-edge)", 0.15)
    return 0 if all(c["ok"] for c in checks if c["issue_target"]) else 1


if __name__ == "__main__":
    sys.exit(main())
