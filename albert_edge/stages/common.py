"""Helpers every model-producing stage shares: load task data, evaluate, save the artifact."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from albert_edge.contract import StageContext, StageError, StageInputError
from albert_edge.data import DataError, Encoded, encode, read_examples
from albert_edge.metrics import classification_metrics, load_predictions, save_predictions
from albert_edge.models import count_parameters, load_model, save_model
from albert_edge.training import predict_logits

if TYPE_CHECKING:
    from albert_edge.variant import ModelVariant
    from export.parity import ParityResult


def task_data(ctx: StageContext[Any], tokenizer: Any, splits: tuple[str, ...] = ("train", "validation", "eval")) -> dict[str, Encoded]:
    """Read and tokenise the pipeline's task splits; DataError becomes a clean stage error.
    Choices are made on `validation` (carved from train); `eval` is only reported."""

    out = {}
    for split in splits:
        try:
            ex = read_examples(ctx.pipeline.task, split)  # type: ignore[arg-type]
        except DataError as err:
            raise StageInputError(str(err)) from None
        if ex.skipped:
            ctx.log.info("  %s: skipped %d malformed rows (on_bad_row: skip)", ex.source, ex.skipped)
        out[split] = encode(tokenizer, ex, ctx.pipeline.task.max_seq_len)
    return out


def load_input_model(ctx: StageContext[Any], role: str = "model") -> tuple[Any, Any, dict[str, Any]]:
    art = ctx.inputs[role]
    return load_model(art.model_dir)


def selection_note(data: dict[str, Encoded], what: str) -> dict[str, Any]:
    """For the manifest: which rows made which choice, and which were only reported."""
    return {"choice": what, "made_on": "validation", "validation_rows": len(data["validation"]),
            "train_rows": len(data["train"]), "reported_on": "eval", "eval_rows": len(data["eval"])}


def evaluate_and_save(
    ctx: StageContext[Any], model: Any, tokenizer: Any, data: dict[str, Encoded], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Evaluate once on the eval split (reported) and on validation (what gates judge); save
    model + eval predictions into the artifact; return metrics (`accuracy` is eval's)."""
    pad = tokenizer.pad_token_id or 0
    eval_enc = data["eval"]
    logits = predict_logits(model, eval_enc, pad_id=pad)
    teacher = ctx.inputs.get("teacher")
    teacher_preds = load_predictions(teacher.path if teacher is not None else None)
    metrics = classification_metrics(eval_enc.labels, logits.argmax(-1).tolist(), ctx.pipeline.task.num_labels, teacher_preds)
    val = data["validation"]
    val_logits = predict_logits(model, val, pad_id=pad)
    metrics["val_accuracy"] = float((val_logits.argmax(-1) == np.asarray(val.labels)).mean())
    metrics["val_n"] = len(val)
    metrics["params"] = count_parameters(model)
    model.config.id2label = dict(enumerate(ctx.pipeline.task.label_names))
    model.config.label2id = {n: i for i, n in enumerate(ctx.pipeline.task.label_names)}
    save_model(model, tokenizer, ctx.out_dir / "model", {"random_weights": ctx.pipeline.random_weights, **(meta or {})})
    save_predictions(ctx.out_dir, logits)
    return metrics


def require_parity(results: Sequence[ParityResult]) -> None:
    """Raise StageError listing every failed file with its table of differing rows."""

    failed = [r for r in results if not r.ok]
    if not failed:
        return
    parts = ["parity check failed for " + ", ".join(r.name for r in failed)]
    for r in failed:
        parts.append(r.summary())
        if r.table:
            parts.append(r.table)
    raise StageError("\n".join(parts))


def export_metrics(main: ModelVariant, results: Sequence[ParityResult], parity_rows: int) -> dict[str, Any]:
    """An export stage's summary metrics: its first file's numbers and the worst parity difference."""
    return {"accuracy": main.accuracy, "val_accuracy": main.val_accuracy, "agreement": main.agreement,
            "max_abs_diff": max(r.max_abs_diff for r in results), "parity_rows": parity_rows, "size_bytes": main.size_bytes,
            "size_mb": round((main.size_bytes or 0) / 1e6, 3)}
