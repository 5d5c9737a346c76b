"""`quantize`: int8 models for each runtime, made by quantising the exported graph; the stage
picks inputs, judges every file and writes the records, the int8 work is in the libraries.

- ONNX Runtime dynamic int8 and static QDQ int8 (compress.onnx_int8, with the accuracy-aware
  keep-float fallback), from the export artifact's fp32 `model.onnx` after ORT basic-level
  pre-optimisation (compress.onnx_graph); `backend: inc`: INC's tuning (compress.onnx_inc).
- TFLite dynamic-range / static int8 (compress.tflite_int8) from the tflite artifact's fp32 file.
- Every file gets the every-weight-MatMul-is-int8 audit and a verdict from the budget
  (albert_edge.budget) on the held-out validation rows: accuracy against the teacher's on
  the same rows and argmax agreement with the fp32 model. The eval split is measured once,
  for the report.
- Accuracy-aware fallback: a file that misses gets its most sensitive nodes kept float, a
  group at a time (ONNX: compress.onnx_int8; TFLite: weight matmuls, compress.tflite_int8);
  the manifest lists them and why, and the audit accepts exactly those float.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from albert_edge.budget import Budget, Verdict, inc_tolerance, judge
from albert_edge.contract import StageContext, StageError
from albert_edge.registry import stage
from albert_edge.schema import require
from albert_edge.variant import ModelVariant, variants_of
from compress.onnx_int8 import PRECISION, CalibMethod, OnnxMode, QuantSpec

TfliteMode = Literal["int8-dynamic", "int8-static"]


@dataclass(frozen=True)
class CalibrationConfig:
    """Task examples (train split) that set static int8 activation ranges."""

    method: CalibMethod = "minmax"
    rows: int = 256
    percentile: float = 99.999

    def check(self) -> None:
        require(1 <= self.rows <= 100_000, "rows", f"{self.rows} calibration rows is outside 1..100000")
        require(90.0 <= self.percentile < 100.0, "percentile", f"{self.percentile} should be in [90, 100)")


@dataclass(frozen=True)
class FallbackConfig:
    """Keep the most sensitive nodes float, `group_size` at a time, until within budget."""

    enabled: bool = True
    group_size: int = 4
    max_float_nodes: int = 32
    sensitivity_rows: int = 64  # calibration rows the per-node sensitivity is measured on

    def check(self) -> None:
        require(self.group_size >= 1, "group_size", "keep at least one node float per step")
        require(self.max_float_nodes >= 1, "max_float_nodes", "allow at least one float node (or set enabled: false)")
        require(self.sensitivity_rows >= 1, "sensitivity_rows", "measure sensitivity on at least one row")


@dataclass(frozen=True)
class QuantizeConfig:
    """Which int8 files to make and how; see the module docstring."""

    onnx: tuple[OnnxMode, ...] = ("dynamic", "static")
    tflite: tuple[TfliteMode, ...] = ()
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    per_channel: bool = False
    fallback: FallbackConfig = field(default_factory=FallbackConfig)
    backend: Literal["native", "inc"] = "native"
    inc_max_trials: int = 16
    primary: str | None = None  # the variant the stage's summary metrics describe; default: the first made
    batch_size: int = 64

    def check(self) -> None:
        require(bool(self.onnx or self.tflite), "onnx", "nothing to quantise", "list onnx: [dynamic, static] and/or tflite: [int8-dynamic]")
        require(len(set(self.onnx)) == len(self.onnx), "onnx", "a mode is listed twice")
        require(self.inc_max_trials >= 1, "inc_max_trials", "allow at least one INC trial")
        require(self.batch_size >= 1, "batch_size", "batch size must be positive")
        names = [f"onnx-{PRECISION[m]}" for m in self.onnx] + [f"tflite-{p}" for p in self.tflite]
        require(self.primary is None or self.primary in names, "primary", f"{self.primary!r} is not a variant this config makes",
                f"one of {', '.join(names)}")

    def variant_names(self) -> list[str]:
        return [f"onnx-{PRECISION[m]}" for m in self.onnx] + [f"tflite-{p}" for p in self.tflite]


def fp32_onnx_variant(art: Any) -> ModelVariant:
    """The export artifact's plain fp32 graph (`model.onnx`, not the ORT-optimised copy)."""

    cands = [v for v in variants_of(art) if v.format == "onnx" and v.precision == "fp32" and not v.details.get("ort_optimization")]
    if not cands:
        raise StageError(f"the onnx artifact {art.path.name} lists no plain fp32 ONNX variant to quantise")
    cands.sort(key=lambda v: v.file != "model.onnx")
    return cands[0]


@dataclass
class _Eval:
    """What a variant is judged on (the held-out validation rows, with the fp32 model's and the
    teacher's accuracy there, and the budget) and what it is reported on (the eval split)."""

    enc: Any
    labels: np.ndarray
    fp32_logits: np.ndarray
    teacher_accuracy: float
    budget: Budget
    report_enc: Any
    teacher_preds: list[int] | None
    num_labels: int
    threads: int
    pad_id: int
    batch_size: int

    def logits(self, path: Path, enc: Any = None, buckets: Any = None) -> np.ndarray:
        from export.parity import file_logits

        return file_logits(path, self.enc if enc is None else enc, threads=self.threads, pad_id=self.pad_id,
                           batch_size=self.batch_size, buckets=buckets)

    def verdict(self, name: str, logits: np.ndarray) -> Verdict:
        acc = float((logits.argmax(-1) == self.labels).mean())
        agreement = float((logits.argmax(-1) == self.fp32_logits.argmax(-1)).mean())
        return judge(name, self.budget, accuracy=acc, reference=self.teacher_accuracy, agreement=agreement, rows=len(self.labels))


def _score(ev: _Eval, name: str, path: Path, val_logits: np.ndarray, buckets: Any = None) -> tuple[dict[str, Any], Verdict]:
    """A finished file's verdict on the validation rows, and its eval-split numbers (measured once)."""
    from albert_edge.metrics import classification_metrics

    verdict = ev.verdict(name, val_logits)
    report = ev.logits(path, enc=ev.report_enc, buckets=buckets)
    m = classification_metrics(list(ev.report_enc.labels), report.argmax(-1).tolist(), ev.num_labels, ev.teacher_preds)
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "teacher_agreement": m.get("agreement"), "confusion": m["confusion"],
           "val_accuracy": verdict.accuracy, "agreement": verdict.agreement, "parity_rows": verdict.rows, "parity_split": "validation",
           "logit_max_abs_diff": float(np.abs(ev.fp32_logits - val_logits).max()), "verdict": verdict.as_dict()}
    level = "info" if verdict.passed else "warning"
    getattr(_log(), level)("  %s: validation %.2f%% (teacher %.2f%%), fp32 agreement %.2f%%: %s; eval %.2f%%", name,
                           100 * verdict.accuracy, 100 * ev.teacher_accuracy, 100 * (verdict.agreement or 0),
                           "within budget" if verdict.passed else "; ".join(verdict.reasons), 100 * m["accuracy"])
    return out, verdict


def _log() -> Any:
    import logging

    return logging.getLogger("albert_edge")


def _onnx_variant(ctx: StageContext[Any], ev: _Eval, mode: OnnxMode, pre: Path, src_bytes: int, calib: Any, sens_enc: Any,
                  work: Path) -> ModelVariant:
    """One ONNX int8 file (compress.onnx_int8, or INC's tuning), judged on validation rows."""
    from compress.onnx_int8 import Int8Error, int8_with_fallback

    cfg: QuantizeConfig = ctx.config
    spec = QuantSpec(mode, cfg.calibration.method, cfg.per_channel, cfg.calibration.percentile)
    name, precision = f"onnx-{PRECISION[mode]}", PRECISION[mode]
    dst = ctx.out_dir / f"model.{precision}.onnx"
    t0 = time.perf_counter()
    extra: dict[str, Any] = {
        "backend": cfg.backend,
        "quantized_from": "model.onnx (ORT basic pre-optimised)",
        "per_channel": cfg.per_channel,
    }
    if mode == "static":
        extra["calibration"] = {"method": cfg.calibration.method, "rows": len(calib), "split": "train",
                                "activations": "uint8", "weights": "int8", "format": "QDQ"}
    if cfg.backend == "inc":
        extra["inc"] = _inc_tune(ev, name, mode, pre, dst, calib, cfg.inc_max_trials)
    last: dict[str, np.ndarray] = {}

    def judge(path: Path) -> Verdict:
        last["logits"] = ev.logits(path)
        return ev.verdict(name, last["logits"])

    fallback = cfg.backend == "native" and cfg.fallback.enabled
    try:
        made = int8_with_fallback(
            pre, dst, spec, judge, calib=calib, pad_id=ev.pad_id, cache=work / f"ranges.{mode}.json" if mode == "static" else None,
            work=work, sensitivity=(sens_enc, lambda p: ev.logits(p, enc=sens_enc)) if fallback else None,
            group_size=cfg.fallback.group_size, max_float_nodes=cfg.fallback.max_float_nodes, log=ctx.log, progress=ctx.progress,
            strict=cfg.backend == "native", prebuilt=cfg.backend == "inc")
    except Int8Error as err:
        raise StageError(str(err)) from None
    if made.fallback is not None:
        extra["fallback"] = made.fallback
    logits = last["logits"] if made.fallback is None else ev.logits(dst)
    scores, _ = _score(ev, name, dst, logits)
    size = dst.stat().st_size
    report = made.matmuls
    ctx.log.info("  %s: %d/%d weight MatMuls int8, %.2f MB (%.3f of fp32)", name, report.weight_int8, report.weight_total,
                 size / 1e6, size / src_bytes)
    return ModelVariant.of_file(name, "onnx", precision, dst, ctx.out_dir, **extra, **scores, max_abs_diff=None,
                                size_ratio=round(size / src_bytes, 4), matmuls=report.as_dict(), float_nodes=made.float_nodes,
                                seconds=round(time.perf_counter() - t0, 2))


def _inc_tune(ev: _Eval, name: str, mode: OnnxMode, pre: Path, dst: Path, calib: Any, max_trials: int) -> dict[str, Any]:
    """INC's accuracy-driven tuning within the budget's tolerance; what it tried, for the manifest."""
    from compress.onnx_inc import inc_tune

    fp32_acc = float((ev.fp32_logits.argmax(-1) == ev.labels).mean())
    tol = inc_tolerance(ev.budget, fp32_acc, ev.teacher_accuracy)
    res = inc_tune(pre, dst, mode, lambda p: ev.verdict(name, ev.logits(p)).accuracy, tolerance=tol,
                   max_trials=max_trials, calib=calib, pad_id=ev.pad_id)
    if not dst.is_file():
        raise StageError(f"{name}: INC tried {len(res.trials)} configs and none kept accuracy within the budget "
                         f"(trial accuracies {[round(a, 4) for a in res.trials]}, fp32 {res.baseline})")
    return {"met_tolerance": res.met, "tolerable_loss": round(tol, 6), "baseline": res.baseline, "trials": res.trials,
            "tuned_on": "validation"}


def _tflite_variants(ctx: StageContext[Any], ev: _Eval, model: Any, calib: Any) -> list[ModelVariant]:
    """TFLite int8 files (compress.tflite_int8; from the tflite artifact's fp32 file when there
    is one, with its buckets), judged through edge_runtime with the smallest-bucket rule."""
    from compress.tflite_int8 import tflite_int8_file
    from export.parity import clip_encoded, torch_logits
    from export.tflite import TFLiteExportError
    from export.tflite_audit import matmul_report, unexpected_float

    cfg: QuantizeConfig = ctx.config
    art = ctx.inputs.get("tflite")
    fp32 = next((v for v in (variants_of(art) if art else []) if v.precision == "fp32" and v.format == "tflite"), None)
    buckets = fp32.buckets if fp32 else ()
    buckets = buckets or (ctx.pipeline.task.max_seq_len,)
    float_file = art.path / fp32.file if fp32 else None
    enc = clip_encoded(ev.enc, buckets[-1])
    clipped = max(ev.enc.lengths()) > buckets[-1]
    view = _Eval(**{**ev.__dict__, "enc": enc, "report_enc": clip_encoded(ev.report_enc, buckets[-1]),
                    "fp32_logits": torch_logits(model, enc, pad_id=ev.pad_id) if clipped else ev.fp32_logits})
    out = []
    for precision in cfg.tflite:
        name = f"tflite-{precision}"
        path = ctx.out_dir / f"model.{precision}.tflite"
        try:
            fields, report = tflite_int8_file(model, path, precision, buckets=buckets, float_file=float_file, calibration=calib,
                                              pad_id=ev.pad_id, threads=ev.threads)
        except TFLiteExportError as err:
            raise StageError(f"{name}: {err}") from None
        logits = view.logits(path, buckets=buckets)
        repair = _tflite_fallback(ctx, view, name, precision, path, logits, model, float_file, buckets, calib)
        if repair is not None:
            fields.update(repair.fields)
            logits = view.logits(path, buckets=buckets)
            report = matmul_report(path)
        float_nodes = repair.float_nodes if repair is not None else []
        stray = unexpected_float(path, {f["node"] for f in float_nodes})
        if stray:
            raise StageError(f"{name}: {len(stray)} of {report.weight_total} weight matmuls stayed float that no fallback "
                             f"asked for ({', '.join(stray[:3])})")
        scores, _ = _score(view, name, path, logits, buckets=buckets)
        variant = ModelVariant.from_dict({"name": name, **fields, "file": path.name, **scores, "max_abs_diff": None,
                                          "matmuls": report.as_dict(), "from_float_file": bool(float_file),
                                          "bucket_rule": "smallest bucket >= real length", "float_nodes": float_nodes,
                                          **({"fallback": repair.summary} if repair is not None else {})})
        if fp32 and fp32.size_bytes:
            variant = variant.with_fields(size_ratio=round(fields["size_bytes"] / fp32.size_bytes, 4))
        ctx.log.info("  %s: %.2f MB, %d/%d weight matmuls int8", name, fields["size_bytes"] / 1e6, report.weight_int8, report.weight_total)
        out.append(variant)
    return out


def _tflite_fallback(ctx: StageContext[Any], view: _Eval, name: str, precision: str, path: Path, logits: np.ndarray, model: Any,
                     float_file: Path | None, buckets: tuple[int, ...], calib: Any) -> Any:
    """The keep-float fallback (compress.tflite_int8) for an int8 file whose verdict misses; None when not needed or off."""
    from compress.tflite_int8 import INT8_PRECISIONS, keep_float_fallback
    from export.parity import clip_encoded
    from export.tflite import calibration_feeds, convert_tflite

    cfg: QuantizeConfig = ctx.config
    first = view.verdict(name, logits)
    if first.passed or not cfg.fallback.enabled or precision not in INT8_PRECISIONS:
        return None
    ctx.log.info("  %s: %s; keeping the most sensitive weight matmuls float", name, "; ".join(first.reasons))
    work = ctx.out_dir / "_work" / f"fallback.{precision}"
    work.mkdir(parents=True, exist_ok=True)
    if float_file is None:
        float_file = work / "model.fp32.tflite"
        convert_tflite(model, float_file, seq_lens=buckets, precision="fp32")
    sens = clip_encoded(calib.subset(list(range(min(cfg.fallback.sensitivity_rows, len(calib))))), buckets[-1])
    feeds = calibration_feeds(calib, buckets, view.pad_id) if precision == "int8-static" else None
    return keep_float_fallback(float_file, path, precision, first=first,
                               judge_file=lambda p: view.verdict(name, view.logits(p, buckets=buckets)),
                               sensitivity_logits=lambda p: view.logits(p, enc=sens, buckets=buckets), work=work,
                               group_size=cfg.fallback.group_size, max_float_nodes=cfg.fallback.max_float_nodes, feeds=feeds,
                               threads=view.threads, model=model, log=ctx.log, progress=ctx.progress)


def stage_verdict(variants: list[dict[str, Any]], budget: Budget) -> dict[str, Any]:
    """The stage's verdict over its files: every file passes, or (on_miss: drop) at least one
    does and the misses are left for the bundle to drop with their reasons."""
    misses = [v for v in variants if not v["verdict"]["passed"]]
    reasons = [f"{v['name']}: {'; '.join(v['verdict']['reasons'])}" for v in misses]
    passed = not misses or (budget.on_miss == "drop" and len(misses) < len(variants))
    return {"passed": passed, "reasons": reasons, "files": len(variants), "missed": [v["name"] for v in misses], "on_miss": budget.on_miss}


@stage("quantize", config=QuantizeConfig, version="6", inputs=("?onnx", "model", "teacher", "?tflite"), output="quantized", gated=True,
       uses_budget=True)
def quantize(ctx: StageContext[QuantizeConfig]) -> dict[str, Any]:
    """int8 ONNX (dynamic, static QDQ) and TFLite files, audited and judged against the budget on held-out rows."""
    from albert_edge.metrics import load_predictions
    from albert_edge.stages.common import load_input_model, task_data
    from compress.onnx_graph import matmul_report, preoptimize
    from export.parity import torch_logits

    cfg: QuantizeConfig = ctx.config
    t_start = time.perf_counter()
    model, tok, _ = load_input_model(ctx)
    pad = tok.pad_token_id or 0
    data = task_data(ctx, tok)
    rng = np.random.default_rng(ctx.pipeline.seed)
    train = data["train"]
    pick = sorted(rng.choice(len(train), size=min(cfg.calibration.rows, len(train)), replace=False).tolist())
    calib = train.subset(pick)
    sens_enc = calib.subset(list(range(min(cfg.fallback.sensitivity_rows, len(calib)))))
    enc = data["validation"]
    fp32_logits = torch_logits(model, enc, pad_id=pad)
    fp32_acc = float((fp32_logits.argmax(-1) == np.asarray(enc.labels)).mean())
    teacher = ctx.teacher
    same = teacher is not None and teacher.key == ctx.inputs["model"].key
    t_acc = teacher.metrics.get("val_accuracy") if teacher is not None else None
    t_acc = fp32_acc if t_acc is None else t_acc
    ev = _Eval(enc, np.asarray(enc.labels), fp32_logits, float(t_acc), ctx.budget, data["eval"],
               None if same else load_predictions(teacher.path if teacher else None), ctx.pipeline.task.num_labels,
               ctx.pipeline.threads, pad, cfg.batch_size)
    if cfg.backend == "inc":
        from compress.onnx_inc import inc_missing

        missing = inc_missing()
        if missing:
            raise StageError(f"backend: inc needs Intel Neural Compressor: {missing}")

    variants: list[ModelVariant] = []
    src_bytes = 0
    coverage_before: dict[str, Any] = {}
    work = ctx.out_dir / "_work"
    work.mkdir()
    try:
        if cfg.onnx:
            art = ctx.inputs.get("onnx")
            if art is None:
                raise StageError("onnx int8 needs an export_onnx step before quantize (or set onnx: [] for TFLite only)")
            v = fp32_onnx_variant(art)
            src = art.path / v.file
            src_bytes = src.stat().st_size
            pre = preoptimize(src, work / "pre.onnx")
            coverage_before = matmul_report(pre).as_dict()
            ctx.log.info("  quantising %s (%.2f MB, %d weight MatMuls); judged on %d validation rows, reported on %d eval rows",
                         v.file, src_bytes / 1e6, coverage_before["weight_matmuls"], len(enc), len(data["eval"]))
            for mode in cfg.onnx:
                variants.append(_onnx_variant(ctx, ev, mode, pre, src_bytes, calib, sens_enc, work))
        if cfg.tflite:
            variants.extend(_tflite_variants(ctx, ev, model, calib))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    primary_name = cfg.primary or variants[0].name
    primary = next((v for v in variants if v.name == primary_name), variants[0])
    records = [v.to_dict() for v in variants]
    ctx.info["variants"] = records
    ctx.info["primary"] = primary.name
    ctx.info["float_nodes"] = {v.name: v.details["float_nodes"] for v in variants if v.details.get("float_nodes")}
    ctx.info["source"] = {"fp32_val_accuracy": fp32_acc, "teacher_val_accuracy": t_acc, "onnx_bytes": src_bytes, "matmuls": coverage_before}
    ctx.info["selection"] = {"choice": "fallback float nodes, INC tuning, verdicts", "made_on": "validation", "validation_rows": len(enc),
                             "reported_on": "eval", "eval_rows": len(data["eval"]), "calibration": "train"}
    mm = primary.details.get("matmuls", {})
    teacher_agreement = primary.details.get("teacher_agreement")
    return {
        "accuracy": primary.accuracy,
        "val_accuracy": primary.val_accuracy,
        "primary": primary.name,
        "macro_f1": primary.details.get("macro_f1"),
        "agreement": teacher_agreement if teacher_agreement is not None else primary.agreement,
        "fp32_agreement": primary.agreement,
        "fp32_val_accuracy": fp32_acc,
        "size_bytes": primary.size_bytes,
        "size_mb": round((primary.size_bytes or 0) / 1e6, 3),
        "size_ratio": primary.details.get("size_ratio"),
        "matmuls_int8": mm.get("weight_matmuls_int8"),
        "matmuls_total": mm.get("weight_matmuls"),
        "float_nodes": len(primary.details.get("float_nodes", [])),
        "variants": {
            v.name: {"accuracy": v.accuracy, "val_accuracy": v.val_accuracy, "size_bytes": v.size_bytes, "passed": v.passed}
            for v in variants
        },
        "verdict": stage_verdict(records, ctx.budget),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
