"""`export_tflite`: one .tflite file per precision (export.tflite), one signature per bucket,
each file's parity checked against the PyTorch model (export.parity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from albert_edge.contract import StageContext, StageError
from albert_edge.registry import stage
from albert_edge.schema import FieldError, require
from albert_edge.variant import ModelVariant
from export.tflite import MAX_BUCKET, PRECISIONS, TFLiteExportError, convert_tflite


@dataclass(frozen=True)
class ExportTFLiteConfig:
    """Export the latest model to TFLite (litert-torch) per precision, checked against PyTorch."""

    buckets: tuple[int, ...] = (32, 64, 128)
    # int8-static (int8 weights and activations, calibrated) is opt-in: it costs a calibration pass
    precisions: tuple[Literal["fp32", "fp16", "int8-dynamic", "int8-static"], ...] = ("fp32", "fp16", "int8-dynamic")
    parity_rows: int = 64
    calibration_rows: int = 128  # train rows for int8-static
    int8_granularity: Literal["channel", "tensor"] = "channel"  # "tensor": also right on tflite-runtime 2.14
    atol: float = 1e-4

    def check(self) -> None:
        require(len(self.buckets) >= 1, "buckets", "give at least one sequence length", "e.g. [32, 64, 128]")
        require(all(1 <= b <= MAX_BUCKET for b in self.buckets), "buckets", f"{list(self.buckets)}: each must be 1..{MAX_BUCKET}")
        require(len(set(self.buckets)) == len(self.buckets), "buckets", f"{list(self.buckets)} repeats a length")
        require(len(self.precisions) >= 1, "precisions", "export at least one precision", "fp32, fp16, int8-dynamic")
        require(len(set(self.precisions)) == len(self.precisions), "precisions", f"{list(self.precisions)} repeats a precision")
        require(self.parity_rows >= 1, "parity_rows", "check at least one row")
        require(self.calibration_rows >= 1, "calibration_rows", "calibrate on at least one row", "100-500 train rows")
        require(0 < self.atol <= 1, "atol", f"{self.atol} should be in (0, 1]", "fp32 files: 1e-4")

    def check_pipeline(self, model: dict[str, Any]) -> None:
        """A bucket longer than task.max_seq_len would be a signature no input ever fills
        (inputs are truncated to max_seq_len first), so it is a mistake, not a clamp."""
        longest = model.get("max_seq_len")
        if isinstance(longest, int) and max(self.buckets) > longest:
            raise FieldError(
                "buckets",
                f"bucket {max(self.buckets)} is longer than task.max_seq_len {longest}",
                f"buckets up to {longest}, e.g. {[b for b in (32, 64, 128, 256) if b < longest] + [longest]}, or a larger task.max_seq_len",
            )


def _file_name(precision: str) -> str:
    return f"model.{precision}.tflite"


@stage("export_tflite", config=ExportTFLiteConfig, version="5", inputs=("model", "?teacher"), output="tflite")
def export_tflite_stage(ctx: StageContext[ExportTFLiteConfig]) -> dict[str, Any]:
    """Export to TFLite (one file per precision, one signature per bucket) and check every file's parity."""
    from albert_edge.stages.common import export_metrics, load_input_model, require_parity, task_data
    from edge_runtime import ModelLoadError
    from export.parity import check, clip_encoded, file_logits, split_accuracies, torch_logits

    cfg: ExportTFLiteConfig = ctx.config
    model, tok, _ = load_input_model(ctx)
    pad = tok.pad_token_id or 0
    buckets = tuple(sorted(cfg.buckets))
    data = task_data(ctx, tok, ("validation", "eval"))
    top = buckets[-1]
    for split, split_enc in data.items():
        if max(split_enc.lengths()) > top:
            ctx.log.info("  %d %s rows exceed the largest bucket %d and are truncated to it (as on a device)",
                         sum(n > top for n in split_enc.lengths()), split, top)
    val, enc = clip_encoded(data["validation"], top), clip_encoded(data["eval"], top)
    rows = list(range(min(cfg.parity_rows, len(val))))
    part = val.subset(rows)
    reference = torch_logits(model, part, pad_id=pad)
    calib = None
    if "int8-static" in cfg.precisions:
        train = task_data(ctx, tok, ("train",))["train"]
        calib = train.subset(list(range(min(cfg.calibration_rows, len(train)))))
    fp32_file = ctx.out_dir / _file_name("fp32")
    results, variants = [], []
    try:
        fp32_fields = convert_tflite(model, fp32_file, seq_lens=buckets, precision="fp32")  # the others are made from it
        for precision in sorted(cfg.precisions, key=PRECISIONS.index):
            path = ctx.out_dir / _file_name(precision)
            fields = fp32_fields if precision == "fp32" else convert_tflite(
                model, path, seq_lens=buckets, precision=precision, float_file=fp32_file, calibration=calib, pad_id=pad,
                threads=ctx.pipeline.threads, granularity=cfg.int8_granularity)
            val_logits = file_logits(path, val, threads=ctx.pipeline.threads, buckets=buckets, pad_id=pad)
            res = check(f"tflite-{precision}", reference, val_logits[rows], part.labels, precision=precision, atol=cfg.atol,
                        min_agreement=ctx.budget.min_agreement)
            ctx.log.info("  %s (%.2f MB, %.1fs)", res.summary(), fields["size_bytes"] / 1e6, fields["seconds"])
            results.append(res)
            variants.append(
                ModelVariant.from_dict(
                    {
                        "name": f"tflite-{precision}",
                        **fields,
                        "file": path.name,
                        **split_accuracies(
                            val_logits, val, file_logits(path, enc, threads=ctx.pipeline.threads, buckets=buckets, pad_id=pad), enc
                        ),
                        "agreement": res.agreement,
                        "max_abs_diff": res.max_abs_diff,
                        "parity_rows": res.rows,
                        "parity_split": "validation",
                        "bucket_rule": "smallest bucket >= real length",
                    }
                )
            )
    except (TFLiteExportError, ModelLoadError) as err:
        raise StageError(str(err)) from None
    if "fp32" not in cfg.precisions:
        fp32_file.unlink()  # only the precisions asked for stay in the artifact
    require_parity(results)
    ctx.info["variants"] = [v.to_dict() for v in variants]
    return {
        **export_metrics(variants[0], results, len(rows)),
        "buckets": list(buckets),
        "sizes_mb": {v.precision: round((v.size_bytes or 0) / 1e6, 3) for v in variants},
        "accuracies": {v.precision: v.accuracy for v in variants},
    }
