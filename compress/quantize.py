"""`quantize`: int8 models for each runtime, made by quantising the exported graph.

- ONNX Runtime dynamic int8 (s8 weights) and static QDQ int8 (u8 activations calibrated on
  task examples, s8 weights), from the export artifact's fp32 `model.onnx` after ORT
  basic-level pre-optimisation (without it the quantizer misses ALBERT's shared weights).
  int8 PyTorch modules (torch.ao, torchao, INC) were seen not to export to small ONNX files,
  which is why the graph, not the module, is quantised.
- TFLite dynamic-range / full-integer int8 through `export.tflite.convert_tflite`.
- Accuracy-aware fallback: a variant that loses more than the pipeline's budget gets its most
  sensitive nodes kept float, a group at a time; the manifest lists them and why.
- `backend: inc`: Intel Neural Compressor's accuracy-driven tuning with the same budget.

The budget gate judges the primary variant (`primary`, default the first of `onnx`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from albert_edge.registry import stage
from albert_edge.schema import require
from compress.onnx_int8 import PRECISION, CalibMethod, OnnxMode, QuantSpec

TfliteMode = Literal["int8-dynamic", "int8-full"]


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
    mode: Literal["ptq", "qat"] = "ptq"
    primary: str | None = None  # variant name the gate judges; default: the first ONNX mode
    min_agreement: float = 0.8  # below this argmax agreement with fp32 the int8 file has collapsed
    batch_size: int = 64

    def check(self) -> None:
        require(bool(self.onnx or self.tflite), "onnx", "nothing to quantise", "list onnx: [dynamic, static] and/or tflite: [int8-dynamic]")
        require(len(set(self.onnx)) == len(self.onnx), "onnx", "a mode is listed twice")
        require(self.mode == "ptq", "mode", "qat is not implemented",
                "post-training int8 stayed within the budget on the models measured; see the quantize README section")
        require(self.inc_max_trials >= 1, "inc_max_trials", "allow at least one INC trial")
        require(0.0 <= self.min_agreement <= 1.0, "min_agreement", f"{self.min_agreement} should be in [0, 1]")
        require(self.batch_size >= 1, "batch_size", "batch size must be positive")
        names = [f"onnx-{PRECISION[m]}" for m in self.onnx] + [f"tflite-{p}" for p in self.tflite]
        require(self.primary is None or self.primary in names, "primary", f"{self.primary!r} is not a variant this config makes",
                f"one of {', '.join(names)}")

    def variant_names(self) -> list[str]:
        return [f"onnx-{PRECISION[m]}" for m in self.onnx] + [f"tflite-{p}" for p in self.tflite]


def fp32_onnx_variant(art: Any) -> dict[str, Any]:
    """The export artifact's plain fp32 graph (`model.onnx`, not the ORT-optimised copy)."""
    from albert_edge.runner import StageError

    cands = [v for v in art.variants() if v.get("format") == "onnx" and v.get("precision") == "fp32" and not v.get("ort_optimization")]
    if not cands:
        raise StageError(f"the onnx artifact {art.path.name} lists no plain fp32 ONNX variant to quantise")
    cands.sort(key=lambda v: (v.get("seq_len") is not None, v["file"] != "model.onnx"))
    return cands[0]


@dataclass
class _Eval:
    """Everything a variant is judged against: eval rows, fp32 and teacher predictions, budget."""

    enc: Any
    labels: np.ndarray
    fp32_logits: np.ndarray
    teacher_preds: list[int] | None
    teacher_accuracy: float
    budget: float | None
    num_labels: int
    threads: int
    pad_id: int
    batch_size: int

    def logits(self, path: Path, enc: Any = None, buckets: Any = None) -> np.ndarray:
        from export.parity import file_logits

        return file_logits(path, self.enc if enc is None else enc, threads=self.threads, pad_id=self.pad_id,
                           batch_size=self.batch_size, buckets=buckets)

    def accuracy(self, path: Path) -> float:
        return float((self.logits(path).argmax(-1) == self.labels).mean())

    def within(self, accuracy: float) -> bool:
        return self.budget is None or 100.0 * (self.teacher_accuracy - accuracy) <= self.budget + 1e-9


def _score(ev: _Eval, name: str, precision: str, logits: np.ndarray, min_agreement: float) -> tuple[dict[str, Any], Any]:
    """Eval metrics of one file plus its parity verdict against the fp32 model."""
    from albert_edge.metrics import classification_metrics
    from export.parity import check

    preds = logits.argmax(-1).tolist()
    m = classification_metrics(ev.labels.tolist(), preds, ev.num_labels, ev.teacher_preds)
    par = check(name, ev.fp32_logits, logits, ev.labels.tolist(), precision=precision, min_agreement=min_agreement)
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "fp32_agreement": par.agreement,
           "teacher_agreement": m.get("agreement"), "confusion": m["confusion"], "logit_max_abs_diff": par.max_abs_diff}
    return out, par


def _onnx_variant(ctx: Any, ev: _Eval, mode: OnnxMode, pre: Path, src_bytes: int, calib: Any, sens_enc: Any, work: Path) -> tuple[dict[str, Any], Any]:
    """Quantise, audit MatMul coverage, evaluate, fall back if over budget. Returns (variant, parity)."""
    from albert_edge.runner import StageError
    from compress.onnx_graph import matmul_report
    from compress.onnx_int8 import keep_float_search, quantizable_nodes, quantize_onnx, rank_sensitivity
    from export.onnx import file_variant

    cfg: QuantizeConfig = ctx.config
    spec = QuantSpec(mode, cfg.calibration.method, cfg.per_channel, cfg.calibration.percentile)
    name, precision = f"onnx-{PRECISION[mode]}", PRECISION[mode]
    dst = ctx.out_dir / f"model.{precision}.onnx"
    t0 = time.perf_counter()
    extra: dict[str, Any] = {"backend": cfg.backend, "quantized_from": "model.onnx (ORT basic pre-optimised)", "per_channel": cfg.per_channel}
    if mode == "static":
        extra["calibration"] = {"method": cfg.calibration.method, "rows": len(calib), "split": "train",
                                "activations": "uint8", "weights": "int8", "format": "QDQ"}
    float_nodes: list[dict[str, Any]] = []
    cache = work / f"ranges.{mode}.json" if mode == "static" else None
    if cfg.backend == "inc":
        from compress.onnx_inc import inc_tune, tolerable_loss

        fp32_acc = float((ev.fp32_logits.argmax(-1) == ev.labels).mean())
        budget = 100.0 if ev.budget is None else ev.budget
        tol = tolerable_loss(fp32_acc, ev.teacher_accuracy, budget)
        res = inc_tune(pre, dst, mode, ev.accuracy, tolerance=tol, max_trials=cfg.inc_max_trials, calib=calib, pad_id=ev.pad_id)
        extra["inc"] = {"met_tolerance": res.met, "tolerable_loss": round(tol, 6), "baseline": res.baseline, "trials": res.trials}
        if not dst.is_file():
            raise StageError(f"{name}: INC tried {len(res.trials)} configs and none kept accuracy within the budget "
                             f"(trial accuracies {[round(a, 4) for a in res.trials]}, fp32 {res.baseline})")
    else:
        quantize_onnx(pre, dst, spec, calib=calib, pad_id=ev.pad_id, cache=cache)
    logits = ev.logits(dst)
    acc = float((logits.argmax(-1) == ev.labels).mean())
    ctx.log.info("  %s: accuracy %.2f%% (teacher %.2f%%, budget %s points)", name, 100 * acc, 100 * ev.teacher_accuracy, ev.budget)
    if cfg.backend == "native" and not ev.within(acc) and cfg.fallback.enabled:
        fb = cfg.fallback
        sens_ref = ev.logits(pre, enc=sens_enc)
        cands = quantizable_nodes(pre, mode)
        ctx.log.info("  %s: %.2f points over budget; ranking %d nodes by sensitivity on %d calibration rows", name,
                     100 * (ev.teacher_accuracy - acc) - (ev.budget or 0.0), len(cands), len(sens_enc))
        ranking = rank_sensitivity(pre, work, spec, cands, sens_ref, lambda p: ev.logits(p, enc=sens_enc), calib=calib,
                                   pad_id=ev.pad_id, cache=cache, progress=ctx.progress)

        def build(keep: list[str]) -> float:
            quantize_onnx(pre, dst, spec, calib=calib, exclude=keep, pad_id=ev.pad_id, cache=cache)
            a = ev.accuracy(dst)
            ctx.log.info("    %d float node(s): accuracy %.2f%%", len(keep), 100 * a)
            return a

        result = keep_float_search(ranking, build, ev.within, group_size=fb.group_size, max_float_nodes=fb.max_float_nodes)
        why = (f"accuracy-aware fallback: all-int8 accuracy {100 * acc:.2f}% was {100 * (ev.teacher_accuracy - acc):.2f} points "
               f"below the teacher's {100 * ev.teacher_accuracy:.2f}% (budget {ev.budget:g})")
        by_node = {s.node: s for s in ranking}
        float_nodes = [{"node": n, "reason": why, "sensitivity_rank": i + 1, "logit_mse": by_node[n].mse, "argmax_flips": by_node[n].flips}
                       for i, n in enumerate(result.float_nodes)]
        extra["fallback"] = {"met_budget": result.met, "all_int8_accuracy": acc,
                             "steps": [{"float_nodes": len(s.float_nodes), "accuracy": s.accuracy} for s in result.steps],
                             "ranking": [{"node": s.node, "logit_mse": s.mse, "argmax_flips": s.flips} for s in ranking]}
        if not result.met:
            ctx.log.warning("  %s: fallback ran out of options (%d float nodes) at %.2f%%", name, len(result.float_nodes), 100 * result.accuracy)
        logits = ev.logits(dst)
    report = matmul_report(dst)
    kept = {f["node"] for f in float_nodes}
    stray = [n for n in report.float_weight_nodes if n not in kept]
    if stray and cfg.backend == "native":
        raise StageError(f"{name}: the quantizer left {len(stray)} of {report.weight_total} weight MatMuls float that no fallback asked for "
                         f"({', '.join(stray[:5])}); was the graph pre-optimised?")
    scores, parity = _score(ev, name, precision, logits, cfg.min_agreement)
    size = dst.stat().st_size
    variant = file_variant(name, dst, ctx.out_dir, precision, parity, scores["accuracy"], **extra)
    variant.update(max_abs_diff=None, agreement=scores["fp32_agreement"], teacher_agreement=scores["teacher_agreement"],
                   macro_f1=scores["macro_f1"], confusion=scores["confusion"], logit_max_abs_diff=scores["logit_max_abs_diff"],
                   size_ratio=round(size / src_bytes, 4), matmuls=report.as_dict(), float_nodes=float_nodes,
                   seconds=round(time.perf_counter() - t0, 2))
    ctx.log.info("  %s: %d/%d weight MatMuls int8, %.2f MB (%.3f of fp32), accuracy %.2f%%, fp32 agreement %.2f%%", name,
                 report.weight_int8, report.weight_total, size / 1e6, size / src_bytes, 100 * scores["accuracy"], 100 * scores["fp32_agreement"])
    return variant, parity


def _tflite_variants(ctx: Any, ev: _Eval, model: Any) -> list[tuple[dict[str, Any], Any]]:
    """TFLite int8 files from the TFLite writer (from the tflite artifact's fp32 file when there
    is one, with its buckets), evaluated through edge_runtime with the smallest-bucket rule."""
    from export.parity import clip_encoded, torch_logits
    from export.tflite import convert_tflite

    cfg: QuantizeConfig = ctx.config
    art = ctx.inputs.get("tflite")
    fp32 = next((v for v in (art.variants() if art else []) if v.get("precision") == "fp32" and v.get("format") == "tflite"), None)
    buckets = tuple(sorted(fp32.get("buckets") or [])) if fp32 else ()
    buckets = buckets or (ctx.pipeline.task.max_seq_len,)
    float_file = art.path / fp32["file"] if fp32 else None
    enc = clip_encoded(ev.enc, buckets[-1])
    clipped = max(ev.enc.lengths()) > buckets[-1]
    view = _Eval(**{**ev.__dict__, "enc": enc, "fp32_logits": torch_logits(model, enc, pad_id=ev.pad_id) if clipped else ev.fp32_logits})
    out = []
    for precision in cfg.tflite:
        name = f"tflite-{precision}"
        path = ctx.out_dir / f"model.{precision}.tflite"
        try:
            fields = convert_tflite(model, path, seq_lens=buckets, precision=precision, float_file=float_file)  # type: ignore[arg-type]
        except Exception as err:  # int8-full needs the TensorFlow converter, which the litert-torch path lacks
            ctx.log.warning("  %s skipped: %s", name, err)
            ctx.info.setdefault("skipped", []).append({"variant": name, "why": f"{type(err).__name__}: {err}"})
            path.unlink(missing_ok=True)
            continue
        logits = view.logits(path, buckets=buckets)
        scores, parity = _score(view, name, precision, logits, cfg.min_agreement)
        variant = {"name": name, **fields, "file": path.name, "accuracy": scores["accuracy"], "agreement": scores["fp32_agreement"],
                   "teacher_agreement": scores["teacher_agreement"], "macro_f1": scores["macro_f1"], "max_abs_diff": None,
                   "logit_max_abs_diff": scores["logit_max_abs_diff"], "from_float_file": bool(float_file),
                   "bucket_rule": "smallest bucket >= real length"}
        if fp32:
            variant["size_ratio"] = round(fields["size_bytes"] / fp32["size_bytes"], 4)
        ctx.log.info("  %s: %.2f MB, accuracy %.2f%%, fp32 agreement %.2f%%", name, fields["size_bytes"] / 1e6,
                     100 * scores["accuracy"], 100 * scores["fp32_agreement"])
        out.append((variant, parity))
    return out


@stage("quantize", config=QuantizeConfig, version="3", inputs=("?onnx", "model", "teacher", "?tflite"), output="quantized", gated=True, uses_budget=True)
def quantize(ctx: Any) -> dict[str, Any]:
    """int8 ONNX (dynamic, static QDQ) and TFLite files, audited and kept within the accuracy budget."""
    from albert_edge.metrics import load_predictions
    from albert_edge.runner import StageError
    from albert_edge.stages.common import load_input_model, task_data
    from compress.onnx_graph import matmul_report, preoptimize
    from export.parity import require_parity, torch_logits

    cfg: QuantizeConfig = ctx.config
    t_start = time.perf_counter()
    model, tok, _ = load_input_model(ctx)
    pad = tok.pad_token_id or 0
    data = task_data(ctx, tok, ("train", "eval"))
    rng = np.random.default_rng(ctx.pipeline.seed)
    train = data["train"]
    pick = sorted(rng.choice(len(train), size=min(cfg.calibration.rows, len(train)), replace=False).tolist())
    calib = train.subset(pick)
    sens_enc = calib.subset(list(range(min(cfg.fallback.sensitivity_rows, len(calib)))))
    enc = data["eval"]
    fp32_logits = torch_logits(model, enc, pad_id=pad)
    teacher = ctx.teacher
    same = teacher is not None and teacher.key == ctx.inputs["model"].key
    fp32_acc = float((fp32_logits.argmax(-1) == np.asarray(enc.labels)).mean())
    t_acc = ctx.teacher_accuracy if ctx.teacher_accuracy is not None else fp32_acc
    ev = _Eval(enc, np.asarray(enc.labels), fp32_logits, None if same else load_predictions(teacher.path if teacher else None),
               float(t_acc), ctx.max_accuracy_drop, ctx.pipeline.task.num_labels, ctx.pipeline.threads, pad, cfg.batch_size)
    if cfg.backend == "inc":
        from compress.onnx_inc import inc_missing

        missing = inc_missing()
        if missing:
            raise StageError(f"backend: inc needs Intel Neural Compressor: {missing}")

    results: list[tuple[dict[str, Any], Any]] = []
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
            src = art.path / v["file"]
            src_bytes = src.stat().st_size
            pre = preoptimize(src, work / "pre.onnx")
            coverage_before = matmul_report(pre).as_dict()
            ctx.log.info("  quantising %s (%.2f MB, %d weight MatMuls)", v["file"], src_bytes / 1e6, coverage_before["weight_matmuls"])
            for mode in cfg.onnx:
                results.append(_onnx_variant(ctx, ev, mode, pre, src_bytes, calib, sens_enc, work))
        if cfg.tflite:
            results.extend(_tflite_variants(ctx, ev, model))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not results:
        raise StageError("no int8 file was made (see the skipped entries above)")
    require_parity([p for _, p in results])  # an int8 file that collapsed (agreement < min_agreement) fails here
    variants = [v for v, _ in results]
    primary_name = cfg.primary or variants[0]["name"]
    primary = next((v for v in variants if v["name"] == primary_name), variants[0])
    ctx.info["variants"] = variants
    ctx.info["primary"] = primary["name"]
    ctx.info["float_nodes"] = {v["name"]: v.get("float_nodes", []) for v in variants if v.get("float_nodes")}
    ctx.info["source"] = {"fp32_accuracy": fp32_acc, "teacher_accuracy": t_acc, "onnx_bytes": src_bytes, "matmuls": coverage_before}
    mm = primary.get("matmuls", {})
    return {
        "accuracy": primary["accuracy"], "primary": primary["name"], "macro_f1": primary["macro_f1"],
        "agreement": primary["teacher_agreement"] if primary["teacher_agreement"] is not None else primary["agreement"],
        "fp32_agreement": primary["agreement"], "fp32_accuracy": fp32_acc,
        "size_bytes": primary["size_bytes"], "size_mb": round(primary["size_bytes"] / 1e6, 3), "size_ratio": primary.get("size_ratio"),
        "matmuls_int8": mm.get("weight_matmuls_int8"), "matmuls_total": mm.get("weight_matmuls"),
        "float_nodes": len(primary.get("float_nodes", [])),
        "variants": {v["name"]: {"accuracy": v["accuracy"], "size_bytes": v["size_bytes"]} for v in variants},
        "seconds": round(time.perf_counter() - t_start, 1),
    }
