"""`bundle`: the directory an app developer takes as it is (export.bundle writes its parts).
Every model file from earlier steps that passes the budget, the tokenizer files, labels,
metadata (I/O, buckets, quantisation, measured accuracy and parity, sha256 of every file,
library versions), golden vectors for device tests, and BUNDLE.md with minimal inference code."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from albert_edge.contract import StageContext, StageError
from albert_edge.data import EVAL_NPZ, encoded_to_npz
from albert_edge.registry import stage
from albert_edge.schema import require, to_dict
from export.bundle import (
    BUNDLE_DIR,
    GOLDEN_FILE,
    GOLDEN_TOLERANCE,
    BundleError,
    bundle_files,
    collect_variants,
    render_bundle_md,
    tokenizer_files,
    write_golden,
)


@dataclass(frozen=True)
class BundleConfig:
    """Collect every model variant of the pipeline into a self-contained `bundle/` directory."""

    golden_rows: int = 32
    include: tuple[str, ...] = ("*",)

    def check(self) -> None:
        require(1 <= self.golden_rows <= 1000, "golden_rows", f"{self.golden_rows} is outside 1..1000", "a few dozen is plenty")
        require(len(self.include) > 0, "include", "give at least one variant-name glob", "['*'] takes every variant")


@stage("bundle", config=BundleConfig, version="5", inputs=("model", "?teacher", "*"), output="bundle", gated=True, uses_budget=True)
def bundle(ctx: StageContext[BundleConfig]) -> dict[str, Any]:
    """Write bundle/: every model file within budget, tokenizer, labels, metadata (sha256s, verdicts), golden vectors, BUNDLE.md."""
    from albert_edge.artifacts import file_hashes, library_versions
    from albert_edge.data import encode, read_examples
    from albert_edge.metrics import load_predictions
    from albert_edge.models import count_parameters
    from albert_edge.stages.common import load_input_model, task_data
    from export.judge import FileGate
    from export.parity import torch_logits

    cfg: BundleConfig = ctx.config
    model_art = ctx.inputs["model"]
    picked, notes = collect_variants(model_art, ctx.inputs["*"], cfg.include)
    for n in notes:
        ctx.log.info("  %s", n)
    if not picked:
        raise StageError(f"no model files to bundle: no earlier export/quantize step built from {model_art.step} has a variant matching "
                         f"{list(cfg.include)}; add export_onnx or export_tflite before bundle")
    out = ctx.out_dir / BUNDLE_DIR
    out.mkdir(parents=True)
    model, tok, meta = load_input_model(ctx)
    task = ctx.pipeline.task
    pad = tok.pad_token_id or 0
    ex = read_examples(task, "eval")  # the golden rows: the first rows of the eval split
    enc = encode(tok, ex, task.max_seq_len)
    enc = enc.subset(list(range(min(cfg.golden_rows, len(enc)))))
    reference = torch_logits(model, enc, pad_id=pad)
    teacher = ctx.inputs.get("teacher")
    teacher_val = teacher.metrics.get("val_accuracy") if teacher is not None else None  # None: the model's own is the reference
    gate = FileGate(model, task_data(ctx, tok, ("validation",))["validation"], teacher_val, ctx.budget, threads=ctx.pipeline.threads,
                    pad_id=pad)
    try:
        files = bundle_files(picked, out, gate, enc, reference, model, on_miss=ctx.budget.on_miss, threads=ctx.pipeline.threads,
                             pad_id=pad, log=ctx.log)
    except BundleError as err:
        raise StageError(str(err)) from None
    variants = files.variants
    tok_files = tokenizer_files(model_art.model_dir, out)
    labels = list(task.label_names)
    (out / "labels.json").write_text(json.dumps(labels, indent=2))
    write_golden(out / GOLDEN_FILE, ex.texts[: len(enc)], enc, reference, files.expected, pad)
    # the whole tokenised eval split (+ labels, teacher predictions), so devices and `albert-edge bench`
    # measure accuracy and agreement without a tokenizer
    eval_enc = task_data(ctx, tok, ("eval",))["eval"]
    encoded_to_npz(eval_enc.input_ids, eval_enc.token_type_ids, eval_enc.labels, out / EVAL_NPZ,
                   load_predictions(teacher.path) if teacher is not None else None)
    buckets = sorted({b for v in variants for b in v.buckets})
    (out / "BUNDLE.md").write_text(render_bundle_md(variants, labels, tok_files, buckets, task.max_seq_len, ctx.pipeline.random_weights))
    metadata = {
        "format_version": 1,
        "pipeline": ctx.pipeline.name,
        "model": {"source": ctx.pipeline.model, "step": model_art.step, "params": count_parameters(model),
                  "accuracy": model_art.metrics.get("accuracy"), "num_labels": task.num_labels},
        "random_weights": bool(ctx.pipeline.random_weights or meta.get("random_weights")),
        "labels": labels,
        "max_seq_len": task.max_seq_len,
        "buckets": buckets,
        "tokenizer": {"files": tok_files, "class": type(tok).__name__, "pad_id": pad, "cls_id": tok.cls_token_id,
                      "sep_id": tok.sep_token_id, "unk_id": tok.unk_token_id, "lowercase": bool(getattr(tok, "do_lower_case", False))},
        "golden": {"file": GOLDEN_FILE, "rows": len(enc), "tolerance_by_precision": GOLDEN_TOLERANCE,
                   "note": "expected_logits are the host run of each file; compare a device run of that file with them"},
        "variants": [v.to_dict() for v in variants],
        "budget": {**to_dict(ctx.budget), "judged_on": "validation", "rows": gate.rows, "teacher_val_accuracy": gate.reference},
        "dropped": files.dropped,
        "skipped": notes,
        "libraries": library_versions(),
        "files": file_hashes(out),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
    ctx.info["variants"] = [v.with_fields(file=f"{BUNDLE_DIR}/{v.file}").to_dict() for v in variants]
    ctx.log.info("  bundled %d model files (%s), %d golden rows", len(variants), ", ".join(v.file for v in variants), len(enc))
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"variants": len(variants), "golden_rows": len(enc), "size_bytes": size, "size_mb": round(size / 1e6, 3),
            "random_weights": metadata["random_weights"], "dropped": [d["name"] for d in files.dropped],
            "verdict": {"passed": not files.misses or ctx.budget.on_miss == "drop", "reasons": [d.message() for d in files.misses],
                        "files": len(picked), "missed": [d.name for d in files.misses], "on_miss": ctx.budget.on_miss}}

