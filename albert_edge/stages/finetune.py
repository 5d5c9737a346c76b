"""`finetune`: train a sequence classifier on the task; the usual first step (the teacher)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from albert_edge.contract import StageContext
from albert_edge.models import load_source
from albert_edge.registry import stage
from albert_edge.stages.common import evaluate_and_save, load_input_model, selection_note, task_data
from albert_edge.training import TrainConfig, train


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tune the pipeline's model source (or the previous model artifact)."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1.0, lr=5e-5))
    start_from: str = "source"  # "source": the pipeline's model; "previous": the last model artifact

    def check(self) -> None:
        from albert_edge.schema import require

        require(self.start_from in ("source", "previous"), "start_from", f"{self.start_from!r}", "source or previous")


@stage("finetune", config=FinetuneConfig, version="2", inputs=("?model",), output="model")
def finetune(ctx: StageContext[FinetuneConfig]) -> dict[str, Any]:
    """Fine-tune a sequence classifier (AdamW, warm-up + linear decay, best eval checkpoint)."""
    cfg: FinetuneConfig = ctx.config
    if cfg.start_from == "previous" and ctx.inputs.get("model") is not None:
        model, tok, _ = load_input_model(ctx)
    else:
        model, tok, info = load_source(ctx.pipeline.model, ctx.pipeline.task.num_labels, ctx.pipeline.seed)
    data = task_data(ctx, tok)
    ctx.log.info("  fine-tuning on %d examples, choosing the checkpoint on %d held-out validation rows, reporting on %d eval rows",
                 len(data["train"]), len(data["validation"]), len(data["eval"]))
    res = train(
        model, data["train"], data["validation"], cfg.train, seed=ctx.pipeline.seed, pad_id=tok.pad_token_id or 0, progress=ctx.progress
    )
    ctx.info["history"] = res.history
    ctx.info["selection"] = selection_note(data, "best checkpoint")
    metrics = evaluate_and_save(ctx, model, tok, data, {"source": ctx.pipeline.model})
    metrics.update(train_seconds=round(res.seconds, 1), best_step=res.best_step, steps=res.steps)
    return metrics
