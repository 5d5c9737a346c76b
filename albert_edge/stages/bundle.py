"""`bundle`: the directory an app developer takes as it is (export.bundle writes its parts).
Every model file from earlier steps that passes the budget, the tokenizer files, labels,
metadata (I/O, buckets, quantisation, measured accuracy and parity, sha256 of every file,
library versions), golden vectors for device tests, and BUNDLE.md with minimal inference code."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.contract import StageContext, StageError
from albert_edge.data import EVAL_NPZ, encoded_to_npz
from albert_edge.registry import stage
from albert_edge.schema import require, to_dict
from albert_edge.variant import ModelVariant
from export.bundle import (
    BUNDLE_DIR,
    GOLDEN_FILE,
    GOLDEN_TOLERANCE,
    bundle_name,
    collect_variants,
    describe_io,
    golden_tolerance,
    render_bundle_md,
    tokenizer_files,
)


@dataclass(frozen=True)
class BundleConfig:
    """Collect every model variant of the pipeline into a self-contained `bundle/` directory."""

    golden_rows: int = 32
    include: tuple[str, ...] = ("*",)

    def check(self) -> None:
        require(1 <= self.golden_rows <= 1000, "golden_rows", f"{self.golden_rows} is outside 1..1000", "a few dozen is plenty")
        require(len(self.include) > 0, "include", "give at least one variant-name glob", "['*'] takes every variant")


def _golden_rows(ctx: StageContext[Any], tok: Any, rows: int) -> tuple[list[str], Any]:
    from albert_edge.data import encode, read_examples

    ex = read_examples(ctx.pipeline.task, "eval")
    enc = encode(tok, ex, ctx.pipeline.task.max_seq_len)
    idx = list(range(min(rows, len(enc))))
    return [ex.texts[i] for i in idx], enc.subset(idx)


@stage("bundle", config=BundleConfig, version="5", inputs=("model", "?teacher", "*"), output="bundle", gated=True, uses_budget=True)
def bundle(ctx: StageContext[BundleConfig]) -> dict[str, Any]:
    """Write bundle/: every model file within budget, tokenizer, labels, metadata (sha256s, verdicts), golden vectors, BUNDLE.md."""
    from albert_edge.artifacts import file_hashes, library_versions, sha256_file
    from albert_edge.models import count_parameters
    from albert_edge.stages.common import load_input_model, task_data
    from edge_runtime import ModelLoadError
    from export.parity import check, clip_encoded, file_logits, torch_logits

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
    texts, enc = _golden_rows(ctx, tok, cfg.golden_rows)
    reference = torch_logits(model, enc, pad_id=pad)
    gate = _Gate.of(ctx, model, task_data(ctx, tok, ("validation",))["validation"], pad)
    clipped_refs: dict[int, np.ndarray] = {}
    taken: set[str] = set()
    variants: list[ModelVariant] = []
    expected, problems, dropped, verdicts = {}, [], [], []
    for art, raw in picked:
        v = ModelVariant.from_dict(raw)
        name = bundle_name(art, raw, taken)
        shutil.copy2(art.path / v.file, out / name)
        buckets = list(v.buckets)
        try:
            verdict = gate.judge(v.name, out / name, buckets)
            # batch 1 at the real length (through the buckets), as an app and device_tests run it: a
            # dynamic-int8 file's activation ranges, and so its logits, depend on the batch around a row
            logits = file_logits(out / name, enc, buckets=buckets or None, threads=ctx.pipeline.threads, pad_id=pad, batch_size=1)
        except ModelLoadError as err:
            raise StageError(f"{art.step}/{v.name}: {err}") from None
        ctx.log.info("  %s", verdict.message())
        if not verdict.passed:
            verdicts.append(verdict)
            if ctx.budget.on_miss == "drop":
                (out / name).unlink()
                taken.discard(name)
                dropped.append({"name": v.name, "source_step": art.step, "reasons": list(verdict.reasons), "verdict": verdict.as_dict()})
                continue
        ref = reference
        if buckets and max(enc.lengths()) > max(buckets):  # the file truncates: compare with the truncated input
            top = max(buckets)
            ref = clipped_refs.setdefault(top, torch_logits(model, clip_encoded(enc, top), pad_id=pad))
        res = check(v.name, ref, logits, enc.labels, precision=v.precision, atol=1e-4,
                    min_agreement=golden_tolerance(v.precision)["min_agreement"])
        if v.precision == "fp32" and v.format == "onnx" and not buckets and not res.ok:
            problems.append(res.summary() + "\n" + res.table)  # a dynamic fp32 file must reproduce the model it claims to be
        expected[name] = np.round(logits, 6).tolist()
        variants.append(v.with_fields(
            file=name, sha256=sha256_file(out / name), size_bytes=(out / name).stat().st_size, source_step=art.step,
            source_artifact=art.path.name, quantization=v.precision, golden=golden_tolerance(v.precision),
            golden_vs_torch={"max_abs_diff": res.max_abs_diff, "agreement": res.agreement}, verdict=verdict.as_dict(),
            **describe_io(out / name)))
    if problems:
        raise StageError("bundled fp32 files do not reproduce the model:\n" + "\n".join(problems))
    if not variants:
        raise StageError("every model file missed the budget, nothing to bundle: " + "; ".join(d.message() for d in verdicts))
    tok_files = tokenizer_files(model_art.model_dir, out)
    labels = list(task.label_names)
    (out / "labels.json").write_text(json.dumps(labels, indent=2))
    golden = {"rows": [{"text": t, "input_ids": ids, "token_type_ids": tt, "label": int(y)}
                       for t, ids, tt, y in zip(texts, enc.input_ids, enc.token_type_ids, enc.labels)],
              "reference_logits": np.round(reference, 6).tolist(), "expected_logits": expected, "pad_id": pad}
    (out / GOLDEN_FILE).write_text(json.dumps(golden))
    _write_eval_npz(ctx, tok, out / EVAL_NPZ)
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
        "dropped": dropped,
        "skipped": notes,
        "libraries": library_versions(),
        "files": file_hashes(out),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
    ctx.info["variants"] = [v.with_fields(file=f"{BUNDLE_DIR}/{v.file}").to_dict() for v in variants]
    ctx.log.info("  bundled %d model files (%s), %d golden rows", len(variants), ", ".join(v.file for v in variants), len(enc))
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"variants": len(variants), "golden_rows": len(enc), "size_bytes": size, "size_mb": round(size / 1e6, 3),
            "random_weights": metadata["random_weights"], "dropped": [d["name"] for d in dropped],
            "verdict": {"passed": not verdicts or ctx.budget.on_miss == "drop", "reasons": [d.message() for d in verdicts],
                        "files": len(picked), "missed": [d.name for d in verdicts], "on_miss": ctx.budget.on_miss}}


@dataclass
class _Gate:
    """Judges every bundled file the same way (albert_edge.budget) on the held-out validation
    rows: accuracy against the teacher's there, argmax agreement with the fp32 model."""

    model: Any
    enc: Any
    pad: int
    threads: int
    budget: Any
    reference: float
    rows: int
    fp32: dict[int, np.ndarray] = field(default_factory=dict)  # by truncation width (0: none)

    @classmethod
    def of(cls, ctx: StageContext[Any], model: Any, enc: Any, pad: int) -> _Gate:
        from export.parity import torch_logits

        teacher = ctx.inputs.get("teacher")
        ref = teacher.metrics.get("val_accuracy") if teacher is not None else None
        if ref is None:
            ref = float((torch_logits(model, enc, pad_id=pad).argmax(-1) == np.asarray(enc.labels)).mean())
        return cls(model, enc, pad, ctx.pipeline.threads, ctx.budget, float(ref), len(enc))

    def judge(self, name: str, path: Path, buckets: list[int]) -> Any:
        from albert_edge.budget import judge
        from export.parity import clip_encoded, file_logits, torch_logits

        width = max(buckets) if buckets else 0
        enc = clip_encoded(self.enc, width) if width else self.enc
        if width not in self.fp32:
            self.fp32[width] = torch_logits(self.model, enc, pad_id=self.pad)
        fp32 = self.fp32[width]
        logits = file_logits(path, enc, buckets=buckets or None, threads=self.threads, pad_id=self.pad, batch_size=1)  # as apps run it
        acc = float((logits.argmax(-1) == np.asarray(enc.labels)).mean())
        agreement = float((logits.argmax(-1) == fp32.argmax(-1)).mean())
        return judge(name, self.budget, accuracy=acc, reference=self.reference, agreement=agreement, rows=len(enc))


def _write_eval_npz(ctx: StageContext[Any], tok: Any, path: Path) -> None:
    """The whole tokenised eval split (+ labels, teacher predictions), so devices and
    `albert-edge bench` measure accuracy and agreement without a tokenizer."""
    from albert_edge.metrics import load_predictions
    from albert_edge.stages.common import task_data

    enc = task_data(ctx, tok, ("eval",))["eval"]
    teacher = ctx.inputs.get("teacher")
    preds = load_predictions(teacher.path) if teacher is not None else None
    encoded_to_npz(enc.input_ids, enc.token_type_ids, enc.labels, path, preds)
