"""`evaluate`: accuracy, macro-F1, confusion matrix and teacher agreement of a model artifact."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import Any

from albert_edge.contract import StageContext
from albert_edge.metrics import classification_metrics, load_predictions, save_predictions
from albert_edge.registry import stage
from albert_edge.stages.common import load_input_model, task_data
from albert_edge.training import predict_logits


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluate the latest model artifact on the task's eval split."""

    batch_size: int = 128


@stage("evaluate", config=EvaluateConfig, version="1", inputs=("model", "?teacher"), output="eval")
def evaluate(ctx: StageContext[EvaluateConfig]) -> dict[str, Any]:
    """Report accuracy, macro-F1, confusion matrix and agreement; save per-example predictions."""
    model, tok, _ = load_input_model(ctx)
    enc = task_data(ctx, tok, ("eval",))["eval"]
    logits = predict_logits(model, enc, ctx.config.batch_size, tok.pad_token_id or 0)
    teacher = ctx.inputs.get("teacher")
    same = teacher is not None and teacher.key == ctx.inputs["model"].key
    teacher_preds = None if same else load_predictions(teacher.path if teacher else None)
    metrics = classification_metrics(enc.labels, logits.argmax(-1).tolist(), ctx.pipeline.task.num_labels, teacher_preds)
    save_predictions(ctx.out_dir, logits)
    shutil.copy(ctx.inputs["model"].path / "manifest.json", ctx.out_dir / "model_manifest.json")
    ctx.log.info("  accuracy %.2f%%  macro-F1 %.4f  confusion %s", 100 * metrics["accuracy"], metrics["macro_f1"], metrics["confusion"])
    return metrics
