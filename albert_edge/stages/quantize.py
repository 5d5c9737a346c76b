"""`quantize`: int8 models for each runtime, made by quantising the exported graph; the stage
picks inputs and writes the records, the int8 work and the judging are in the libraries.

- ONNX Runtime dynamic int8 (`dynamic`: weight MatMuls; `dynamic-attention`: the attention's
  activation MatMuls too, as Optimum makes it) and static QDQ int8 (compress.onnx_int8, with the
  accuracy-aware keep-float fallback), from the export artifact's fp32 `model.onnx` after ORT basic-level
  pre-optimisation (compress.onnx_graph); `backend: inc`: INC's tuning (compress.onnx_inc).
- TFLite dynamic-range / static int8 (compress.tflite_int8) from the tflite artifact's fp32 file.
- Every file gets the every-weight-MatMul-is-int8 audit and a verdict from the budget
  (albert_edge.budget, through export.judge) on the held-out validation rows: accuracy against the teacher's on
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
from typing import Any, Literal

import numpy as np

from albert_edge.contract import StageContext, StageError
from albert_edge.registry import stage
from albert_edge.schema import require
from albert_edge.variant import ModelVariant, variants_of
from compress.onnx_int8 import FILE_TAG, CalibMethod, OnnxMode

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
        require(self.backend != "inc" or "dynamic-attention" not in self.onnx, "onnx",
                "INC's tuning makes dynamic and static files only", "drop dynamic-attention or use backend: native")
        require(self.inc_max_trials >= 1, "inc_max_trials", "allow at least one INC trial")
        require(self.batch_size >= 1, "batch_size", "batch size must be positive")
        names = self.variant_names()
        require(self.primary is None or self.primary in names, "primary", f"{self.primary!r} is not a variant this config makes",
                f"one of {', '.join(names)}")

    def variant_names(self) -> list[str]:
        return [f"onnx-{FILE_TAG[m]}" for m in self.onnx] + [f"tflite-{p}" for p in self.tflite]


def fp32_onnx_variant(art: Any) -> ModelVariant:
    """The export artifact's plain fp32 graph (`model.onnx`, not the ORT-optimised copy)."""

    cands = [v for v in variants_of(art) if v.format == "onnx" and v.precision == "fp32" and not v.details.get("ort_optimization")]
    if not cands:
        raise StageError(f"the onnx artifact {art.path.name} lists no plain fp32 ONNX variant to quantise")
    cands.sort(key=lambda v: v.file != "model.onnx")
    return cands[0]


@stage("quantize", config=QuantizeConfig, version="6", inputs=("?onnx", "model", "teacher", "?tflite"), output="quantized", gated=True,
       uses_budget=True)
def quantize(ctx: StageContext[QuantizeConfig]) -> dict[str, Any]:
    """int8 ONNX (dynamic, static QDQ) and TFLite files, audited and judged against the budget on held-out rows."""
    from albert_edge.metrics import load_predictions
    from albert_edge.stages.common import load_input_model, task_data
    from compress.onnx_inc import inc_missing
    from compress.onnx_int8 import Int8Error, KeepFloat, onnx_int8_variants
    from compress.tflite_int8 import TFLiteInt8Error, tflite_int8_variants
    from export.judge import FileJudge, ReportRows, files_summary
    from export.parity import torch_logits

    cfg: QuantizeConfig = ctx.config
    t_start = time.perf_counter()
    model, tok, _ = load_input_model(ctx)
    pad = tok.pad_token_id or 0
    data = task_data(ctx, tok)
    rng = np.random.default_rng(ctx.pipeline.seed)
    train = data["train"]
    calib = train.subset(sorted(rng.choice(len(train), size=min(cfg.calibration.rows, len(train)), replace=False).tolist()))
    enc = data["validation"]
    fp32_logits = torch_logits(model, enc, pad_id=pad)
    fp32_acc = float((fp32_logits.argmax(-1) == np.asarray(enc.labels)).mean())
    teacher = ctx.teacher
    same = teacher is not None and teacher.key == ctx.inputs["model"].key
    t_acc = teacher.metrics.get("val_accuracy") if teacher is not None else None
    t_acc = fp32_acc if t_acc is None else t_acc
    judge = FileJudge(enc, fp32_logits, float(t_acc), ctx.budget, threads=ctx.pipeline.threads, pad_id=pad, batch_size=cfg.batch_size)
    report = ReportRows(data["eval"], ctx.pipeline.task.num_labels, None if same else load_predictions(teacher.path if teacher else None))
    if cfg.backend == "inc" and (missing := inc_missing()):
        raise StageError(f"backend: inc needs Intel Neural Compressor: {missing}")
    fb = cfg.fallback
    keep_float = KeepFloat(fb.enabled, fb.group_size, fb.max_float_nodes, fb.sensitivity_rows)
    variants: list[ModelVariant] = []
    onnx = None
    work = ctx.out_dir / "_work"
    work.mkdir()
    try:
        if cfg.onnx:
            art = ctx.inputs.get("onnx")
            if art is None:
                raise StageError("onnx int8 needs an export_onnx step before quantize (or set onnx: [] for TFLite only)")
            onnx = onnx_int8_variants(art.path / fp32_onnx_variant(art).file, ctx.out_dir, cfg.onnx, judge, report, calib=calib, work=work,
                                      method=cfg.calibration.method, per_channel=cfg.per_channel, percentile=cfg.calibration.percentile,
                                      backend=cfg.backend, keep_float=keep_float, inc_max_trials=cfg.inc_max_trials, log=ctx.log,
                                      progress=ctx.progress)
            variants.extend(onnx.variants)
        if cfg.tflite:  # from the tflite artifact's fp32 file and its buckets when there is one
            art = ctx.inputs.get("tflite")
            fp32 = next((v for v in (variants_of(art) if art else []) if v.precision == "fp32" and v.format == "tflite"), None)
            variants.extend(tflite_int8_variants(
                model, cfg.tflite, ctx.out_dir, judge, report, buckets=(fp32.buckets if fp32 else ()) or (ctx.pipeline.task.max_seq_len,),
                float_file=art.path / fp32.file if fp32 else None, float_bytes=fp32.size_bytes if fp32 else None, calib=calib,
                keep_float=keep_float, log=ctx.log, progress=ctx.progress))
    except (Int8Error, TFLiteInt8Error) as err:
        raise StageError(str(err)) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    primary_name = cfg.primary or variants[0].name
    primary = next((v for v in variants if v.name == primary_name), variants[0])
    records = [v.to_dict() for v in variants]
    ctx.info["variants"] = records
    ctx.info["primary"] = primary.name
    ctx.info["float_nodes"] = {v.name: v.details["float_nodes"] for v in variants if v.details.get("float_nodes")}
    ctx.info["source"] = {"fp32_val_accuracy": fp32_acc, "teacher_val_accuracy": t_acc, "onnx_bytes": onnx.src_bytes if onnx else 0,
                          "matmuls": onnx.matmuls if onnx else {}}
    ctx.info["selection"] = {"choice": "fallback float nodes, INC tuning, verdicts", "made_on": "validation", "validation_rows": len(enc),
                             "reported_on": "eval", "eval_rows": len(data["eval"]), "calibration": "train"}
    return {**files_summary(variants, primary, fp32_acc, ctx.budget), "seconds": round(time.perf_counter() - t_start, 1)}
