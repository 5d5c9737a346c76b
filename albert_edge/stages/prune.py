"""`prune`: structured (heads, FFN neurons; physically removed) or unstructured (gradual
magnitude) pruning, with recovery fine-tuning under the shared distillation loss."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from albert_edge.contract import StageContext, StageError, StageInputError
from albert_edge.models import count_parameters, load_model
from albert_edge.registry import stage
from albert_edge.schema import FieldError, require
from albert_edge.stages.common import evaluate_and_save, selection_note, task_data
from albert_edge.training import TrainConfig, predict_logits, total_steps, train
from compress import sparsity as sp
from compress import structured as st
from compress.losses import DistillLossConfig, build_loss
from compress.prune_inc import IncConfig, inc_version


@dataclass(frozen=True)
class PruneConfig:
    """heads / ffn: a fraction (0.25) or a count (2) to remove, per layer or (global_ranking)
    over the whole model; sparsity: the unstructured target over encoder weights."""

    method: Literal["structured", "unstructured"] = "structured"
    importance: Literal["taylor", "magnitude"] = "taylor"
    heads: int | float = 0.25
    ffn: int | float = 0.25
    global_ranking: bool = False
    score_batches: int = 16
    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"  # unstructured: one magnitude threshold, or one per matrix
    prune_start: float = 0.0  # unstructured: ramp window, as fractions of the recovery steps
    prune_end: float = 0.7
    prune_every: int = 10
    include_embeddings: bool = False
    recovery: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1.0, lr=5e-5, evals_per_epoch=2))
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    backend: Literal["native", "inc"] = "native"
    inc: IncConfig = field(default_factory=IncConfig)

    def check(self) -> None:
        for key in ("heads", "ffn"):
            v = getattr(self, key)
            if isinstance(v, float):
                require(0.0 <= v < 1.0, key, f"fraction {v} is outside [0, 1)", "a float is a fraction to remove, an integer a count")
            else:
                require(v >= 0, key, f"count {v} is negative")
        require(0.0 <= self.sparsity < 1.0, "sparsity", f"{self.sparsity} is outside [0, 1)", "0.5 removes half the encoder weights")
        require(0.0 <= self.prune_start < self.prune_end <= 1.0, "prune_end", "need 0 <= prune_start < prune_end <= 1")
        require(self.score_batches >= 1, "score_batches", "score on at least one batch")
        require(self.prune_every >= 1, "prune_every", "update masks at least every step")
        if self.backend == "inc":
            require(self.method == "unstructured", "backend", "INC's pruners give pattern masks, not sliced layers",
                    "use method: unstructured with backend: inc (inc.pattern: channelx1 for channel-shaped masks)")
        if self.method == "structured":
            require(self.heads != 0 or self.ffn != 0, "heads", "nothing to prune (heads and ffn are both 0)")

    def check_pipeline(self, model: dict[str, Any]) -> None:
        """A count of heads or neurons to remove per layer must leave each layer one: known
        at validation time when the input model's size is (the source's, or a student's)."""
        if self.method != "structured" or self.global_ranking:
            return
        for key, size_key, what in (("heads", "num_attention_heads", "heads"), ("ffn", "intermediate_size", "FFN neurons")):
            n, amount = model.get(size_key), getattr(self, key)
            if isinstance(n, int) and isinstance(amount, int) and amount > n - 1:
                raise FieldError(key, f"removes {amount} of the input model's {n} {what} per layer; every layer keeps at least one",
                                 f"use at most {n - 1}, or a fraction such as 0.5")

    def output_facts(self, model: dict[str, Any]) -> dict[str, Any]:
        """The pruned model's head and FFN sizes, where they are the same in every layer."""
        out = dict(model)
        for key, size_key in (("heads", "num_attention_heads"), ("ffn", "intermediate_size")):
            n = out.get(size_key)
            if self.method == "structured" and isinstance(n, int):
                out[size_key] = None if self.global_ranking else n - min(st.amount(getattr(self, key), n), n - 1)
        return out


@stage("prune", config=PruneConfig, version="2", inputs=("model", "teacher"), output="model", gated=True)
def prune(ctx: StageContext[PruneConfig]) -> dict[str, Any]:
    """Prune heads/FFN neurons (sliced) or weights (gradual magnitude), then recover with KD."""

    cfg: PruneConfig = ctx.config
    src = ctx.inputs["model"]
    model, tok, meta = load_model(src.model_dir)
    teacher, _, _ = load_model(ctx.inputs["teacher"].model_dir)
    data = task_data(ctx, tok)
    pad = tok.pad_token_id or 0
    loss = build_loss(cfg.loss, teacher, model, data["train"], pad, progress=ctx.progress, log=ctx.log)
    params_before = count_parameters(model)
    metrics: dict[str, Any] = {"input_accuracy": src.metrics.get("accuracy")}
    total = total_steps(len(data["train"]), cfg.recovery)
    on_step, best_from, pruning = None, 0, None
    if cfg.method == "structured":
        try:
            counts, plan = st.prune_structured(model, heads=cfg.heads, ffn=cfg.ffn, importance=cfg.importance,
                                               global_ranking=cfg.global_ranking, loss=loss, train=data["train"],
                                               batch_size=cfg.recovery.batch_size, score_batches=cfg.score_batches,
                                               seed=ctx.pipeline.seed, pad_id=pad, log=ctx.log)
        except st.PruneAmountError as err:
            raise StageInputError(str(err)) from None
        ctx.info["plan"] = {"heads": plan.heads, "neurons": [len(n) for n in plan.neurons]}
        metrics.update(counts)
        val = data["validation"]
        logits = predict_logits(model, val, pad_id=pad)
        metrics["val_accuracy_before_recovery"] = float((logits.argmax(-1) == np.asarray(val.labels)).mean())
    else:
        try:
            pruning = sp.UnstructuredPruning(model, total, sparsity=cfg.sparsity, scope=cfg.scope, prune_start=cfg.prune_start,
                                             prune_end=cfg.prune_end, prune_every=cfg.prune_every,
                                             include_embeddings=cfg.include_embeddings, backend=cfg.backend, inc=cfg.inc)
        except ImportError as err:
            raise StageError(str(err)) from None
        if cfg.backend == "inc":
            metrics["inc_version"] = inc_version()
        on_step, best_from = pruning.on_step, pruning.best_from
    res = None
    if total > 0:
        with loss.context(model):
            res = train(model, data["train"], data["validation"], cfg.recovery, loss, seed=ctx.pipeline.seed, pad_id=pad,
                        progress=ctx.progress, on_step=on_step, params=loss.params, best_from=best_from)
        ctx.info["history"] = res.history
        ctx.info["selection"] = selection_note(data, "best recovery checkpoint")
    if pruning is not None:
        reached = pruning.finish(model)
        if pruning.schedule is not None:
            ctx.info["schedule"] = pruning.schedule
        metrics.update(reached)
        ctx.log.info(
            "  sparsity %.1f%% of pruned weights, %.1f%% of all parameters", 100 * metrics["sparsity"], 100 * metrics["model_sparsity"]
        )
    metrics.update(evaluate_and_save(ctx, model, tok, data, {**meta, "pruned_from": src.key, "prune_method": cfg.method}))
    metrics.update(
        params_before=params_before, recovery_seconds=round(res.seconds, 1) if res else 0.0, recovery_steps=res.steps if res else 0
    )
    metrics["size_bytes"] = sp.weights_file(ctx.out_dir / "model").stat().st_size
    metrics["gzip_bytes"] = sp.gzip_size(sp.weights_file(ctx.out_dir / "model"))
    metrics["input_gzip_bytes"] = sp.gzip_size(sp.weights_file(src.model_dir))
    return metrics
