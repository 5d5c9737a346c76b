"""`export_onnx`: export the latest model to ONNX (export.onnx), add the configured
offline-optimised graph, time the ORT levels for the record, and check every file's parity
against the PyTorch model (export.parity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from albert_edge.contract import StageContext, StageError
from albert_edge.registry import stage
from albert_edge.schema import require
from albert_edge.variant import ModelVariant
from export.onnx import ExportError, check_shared_weights, export_onnx, optimize_onnx, resolve_optimize, time_levels


@dataclass(frozen=True)
class ExportOnnxConfig:
    """Export the latest model to ONNX and validate it against the PyTorch model."""

    opset: int = 17
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    attention: Literal["eager", "sdpa"] = "eager"  # eager attention ran faster in onnxruntime (see export_onnx)
    parity_rows: int = 64
    atol: float = 1e-4
    # offline-optimised graph to add beside model.onnx: auto (= extended), basic, extended or none;
    # true/false are the older spelling of auto/none
    optimize: Literal["auto", "basic", "extended", "none"] | bool = "auto"
    timing_runs: int = 15

    def check(self) -> None:
        require(17 <= self.opset <= 21, "opset", f"opset {self.opset} is outside 17..21", "17 runs on every current onnxruntime")
        require(self.parity_rows >= 1, "parity_rows", "check at least one row")
        require(0 < self.atol <= 1, "atol", f"{self.atol} should be in (0, 1]", "fp32 files: 1e-4")
        require(self.timing_runs >= 3, "timing_runs", "time at least 3 runs per level")


@stage("export_onnx", config=ExportOnnxConfig, version="5", inputs=("model", "?teacher"), output="onnx")
def export_onnx_stage(ctx: StageContext[ExportOnnxConfig]) -> dict[str, Any]:
    """Export to ONNX (shared weights kept shared), add the configured offline-optimised graph, time ORT levels, check parity."""
    from albert_edge.models import count_parameters
    from albert_edge.stages.common import export_metrics, load_input_model, require_parity, task_data
    from export.parity import check, file_logits, split_accuracies, torch_logits

    cfg: ExportOnnxConfig = ctx.config
    model, tok, _ = load_input_model(ctx)
    params = count_parameters(model)
    path = ctx.out_dir / "model.onnx"
    try:
        used = export_onnx(model, path, opset=cfg.opset, exporter=cfg.exporter, attention=cfg.attention)
        weights = check_shared_weights(path, params)
    except ExportError as err:
        raise StageError(str(err)) from None
    ctx.log.info("  exported with %s (opset %d) in %.1fs: %.2f MB, %d weight nodes folded", used["exporter"], cfg.opset,
                 used["seconds"], used["size_bytes"] / 1e6, used["folded_nodes"])
    data = task_data(ctx, tok, ("validation", "eval"))
    val, enc = data["validation"], data["eval"]
    rows = list(range(min(cfg.parity_rows, len(val))))
    part = val.subset(rows)
    pad = tok.pad_token_id or 0
    ref = torch_logits(model, part, pad_id=pad)
    files = [("onnx-fp32", path, {})]
    timing: dict[str, Any] = {}
    level = resolve_optimize(cfg.optimize)
    opt_path = ctx.out_dir / "model.opt.onnx" if level else None
    if opt_path is not None:
        optimize_onnx(path, opt_path, level)
        files.append(("onnx-fp32-opt", opt_path, {"ort_optimization": level, "load_with_level": "disabled"}))
        seq = max(8, min(ctx.pipeline.task.max_seq_len, 128))
        timing = time_levels(path, opt_path, seq_len=seq, runs=cfg.timing_runs, threads=ctx.pipeline.threads)
        ctx.log.info("  ORT levels (ms, seq %d, for information): %s; fastest %s; offline %s graph %.3f vs %.3f ms", seq,
                     timing["level_ms"], timing["best_level"], level, timing["opt_ms"], timing["plain_ms"])
    results, variants = [], []
    for name, file, extra in files:
        val_logits = file_logits(file, val, threads=ctx.pipeline.threads, pad_id=pad)
        res = check(name, ref, val_logits[rows], part.labels, precision="fp32", atol=cfg.atol)
        ctx.log.info("  %s", res.summary())
        results.append(res)
        accs = split_accuracies(val_logits, val, file_logits(file, enc, threads=ctx.pipeline.threads, pad_id=pad), enc)
        variants.append(ModelVariant.of_file(name, "onnx", "fp32", file, ctx.out_dir, accuracy=accs["accuracy"],
                                             val_accuracy=accs["val_accuracy"], agreement=res.agreement, max_abs_diff=res.max_abs_diff,
                                             parity_rows=res.rows, parity_split="validation", exporter=used["exporter"],
                                             opset=cfg.opset, **extra))
    require_parity(results)
    ctx.info["variants"] = [v.to_dict() for v in variants]
    ctx.info["export"] = used
    ctx.info["ort_timing"] = timing
    return {
        **export_metrics(variants[0], results, len(rows)),
        "exporter": used["exporter"],
        "export_seconds": used["seconds"],
        "params": params,
        **weights,
        "ort_best_level": timing.get("best_level"),
        "optimized_level": level or "none",
    }
