"""Helpers every model-producing stage shares: load task data, evaluate, save the artifact."""

from __future__ import annotations

from typing import Any

from albert_edge.data import DataError, Encoded, encode, read_examples
from albert_edge.metrics import classification_metrics, load_predictions, save_predictions
from albert_edge.models import count_parameters, load_model, save_model
from albert_edge.training import predict_logits


def task_data(ctx: Any, tokenizer: Any, splits: tuple[str, ...] = ("train", "eval")) -> dict[str, Encoded]:
    """Read and tokenise the pipeline's task splits; a DataError is the user's input to fix (exit 2)."""
    from albert_edge.runner import StageInputError

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


def load_input_model(ctx: Any, role: str = "model") -> tuple[Any, Any, dict[str, Any]]:
    art = ctx.inputs[role]
    return load_model(art.model_dir)


def evaluate_and_save(ctx: Any, model: Any, tokenizer: Any, eval_enc: Encoded, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate on the eval split, save model + predictions into the artifact, return metrics."""
    logits = predict_logits(model, eval_enc, pad_id=tokenizer.pad_token_id or 0)
    teacher = ctx.inputs.get("teacher")
    teacher_preds = load_predictions(teacher.path if teacher is not None else None)
    metrics = classification_metrics(eval_enc.labels, logits.argmax(-1).tolist(), ctx.pipeline.task.num_labels, teacher_preds)
    metrics["params"] = count_parameters(model)
    model.config.id2label = dict(enumerate(ctx.pipeline.task.label_names))
    model.config.label2id = {n: i for i, n in enumerate(ctx.pipeline.task.label_names)}
    save_model(model, tokenizer, ctx.out_dir / "model", {"random_weights": ctx.pipeline.random_weights, **(meta or {})})
    save_predictions(ctx.out_dir, logits)
    return metrics
