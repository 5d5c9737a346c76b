"""`distill`: train a smaller ALBERT student from the teacher artifact (KD + optional TinyBERT terms)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from albert_edge.budget import drop_points
from albert_edge.contract import StageContext, StageError
from albert_edge.models import count_parameters, load_model
from albert_edge.registry import stage
from albert_edge.schema import FieldError, require
from albert_edge.stages.common import evaluate_and_save, selection_note, task_data
from albert_edge.training import TrainConfig, train
from compress.losses import DistillLossConfig, build_loss
from compress.student import InitConfig, StudentConfig, build_student


@dataclass(frozen=True)
class DistillConfig:
    """Student architecture, how it is initialised from the teacher, the loss and the schedule."""

    student: StudentConfig = field(default_factory=StudentConfig)
    init: InitConfig = field(default_factory=InitConfig)
    loss: DistillLossConfig = field(default_factory=DistillLossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3.0, batch_size=32, lr=1e-4, evals_per_epoch=2))

    def check(self) -> None:
        n = self.student.num_hidden_layers
        if isinstance(self.init.layers, tuple):
            require(len(self.init.layers) == n, "init.layers", f"{len(self.init.layers)} teacher layers listed for {n} student layers")
        if self.loss.layer_map != "auto":
            require(len(self.loss.layer_map) == n, "loss.layer_map", f"{len(self.loss.layer_map)} entries for {n} student layers")

    def check_pipeline(self, source_info: dict[str, Any]) -> None:
        """Cross-check against the teacher's source (validation time, before any work)."""
        teacher_layers = source_info.get("num_hidden_layers")
        if not teacher_layers:
            return
        n = self.student.num_hidden_layers
        if n > teacher_layers:
            raise FieldError("student.num_hidden_layers", f"{n} student layers but the teacher has only {teacher_layers}",
                             f"use at most {teacher_layers}; a student is smaller than its teacher")
        for key, idx in (("init.layers", self.init.layers), ("loss.layer_map", self.loss.layer_map)):
            if isinstance(idx, tuple) and max(idx) >= teacher_layers:
                raise FieldError(key, f"teacher layer {max(idx)} does not exist (the teacher has {teacher_layers}, 0-based)")
        hidden = source_info.get("hidden_size")
        if hidden and self.student.hidden_size is None and self.student.num_attention_heads and hidden % self.student.num_attention_heads:
            raise FieldError(
                "student.num_attention_heads",
                f"the teacher's hidden size {hidden} is not divisible by {self.student.num_attention_heads} heads",
            )

    def output_facts(self, teacher: dict[str, Any]) -> dict[str, Any]:
        """The student's architecture, for static checks of later steps (e.g. prune's head count)."""
        s = self.student
        return dict(teacher, num_hidden_layers=s.num_hidden_layers, hidden_size=s.hidden_size or teacher.get("hidden_size"),
                    num_attention_heads=s.num_attention_heads or teacher.get("num_attention_heads"),
                    intermediate_size=s.intermediate_size or teacher.get("intermediate_size"))


@stage("distill", config=DistillConfig, version="2", inputs=("teacher",), output="model", gated=True)
def distill(ctx: StageContext[DistillConfig]) -> dict[str, Any]:
    """Distil the teacher into an ALBERT student (layer selection, shared groups, SVD embeddings)."""

    cfg: DistillConfig = ctx.config
    teacher, tok, _ = load_model(ctx.inputs["teacher"].model_dir)
    t_layers = teacher.config.num_hidden_layers
    if cfg.student.num_hidden_layers > t_layers:
        raise StageError(f"student has {cfg.student.num_hidden_layers} layers but the teacher only {t_layers}")
    data = task_data(ctx, tok)
    counts = np.bincount(
        np.concatenate([np.asarray(x, dtype=np.int64) for x in data["train"].input_ids]), minlength=teacher.config.vocab_size
    )
    try:
        student, notes = build_student(
            teacher, cfg.student, cfg.init, ctx.pipeline.seed, counts[: teacher.config.vocab_size], ctx.pipeline.task.max_seq_len
        )
    except ValueError as err:
        raise StageError(str(err)) from None
    for note in notes:
        ctx.log.info("  init: %s", note)
    pad = tok.pad_token_id or 0
    loss = build_loss(cfg.loss, teacher, student, data["train"], pad, progress=ctx.progress, log=ctx.log)
    t_params, s_params = count_parameters(teacher), count_parameters(student)
    ctx.log.info(
        "  student %d params (teacher %d, %.1fx smaller), %d train rows", s_params, t_params, t_params / s_params, len(data["train"])
    )
    with loss.context(student):
        res = train(student, data["train"], data["validation"], cfg.train, loss, seed=ctx.pipeline.seed, pad_id=pad,
                    progress=ctx.progress, params=loss.params)
    ctx.info.update(history=res.history, init=notes, layer_map=loss.layer_map, selection=selection_note(data, "best checkpoint"))
    metrics = evaluate_and_save(ctx, student, tok, data, {"distilled_from": ctx.inputs["teacher"].key, "init": notes})
    metrics.update(
        teacher_params=t_params, compression=round(t_params / s_params, 2), train_seconds=round(res.seconds, 1),
        steps=res.steps, best_step=res.best_step, teacher_forward_batches=loss.teacher_batches,
    )
    if ctx.teacher_accuracy is not None:
        metrics["accuracy_drop_points"] = round(drop_points(ctx.teacher_accuracy, metrics["accuracy"]), 2)
    return metrics
