"""The one distillation loss (distill and prune recovery both use it).

total = alpha_ce * CE(student, labels) + alpha_kd * T^2 * KL(teacher_T || student_T)
      + hidden_mse * MSE(project(student hidden), teacher hidden)  [TinyBERT, mapped layers]
      + attention * KL(teacher attention || student attention)      [TinyBERT, mapped layers]

With only the logit terms the teacher is run once over the training set and its logits are
cached (keyed by the token sequence, so shuffled, bucketed batches still find them); the
hidden-state and attention terms need the teacher's internals and run it live per batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from albert_edge.data import Encoded
from albert_edge.schema import require
from albert_edge.training import model_inputs, predict_logits


@dataclass(frozen=True)
class DistillLossConfig:
    """Weights of the loss terms; layer_map[j] = teacher layer (0-based) matched to student layer j."""

    alpha_ce: float = 0.5
    alpha_kd: float = 0.5
    temperature: float = 2.0
    hidden_mse: float = 0.0
    attention: float = 0.0
    layer_map: Literal["auto"] | tuple[int, ...] = "auto"
    cache_teacher_logits: bool = True

    def check(self) -> None:
        for name in ("alpha_ce", "alpha_kd", "hidden_mse", "attention"):
            require(getattr(self, name) >= 0, name, f"{getattr(self, name)} is negative", "loss weights are >= 0")
        require(
            self.alpha_ce + self.alpha_kd + self.hidden_mse + self.attention > 0,
            "alpha_kd",
            "every loss weight is 0",
            "set alpha_kd: 1.0 for plain distillation",
        )
        require(0 < self.temperature <= 100, "temperature", f"{self.temperature} is outside (0, 100]", "typical: 1 .. 8")
        if self.layer_map != "auto":
            require(all(i >= 0 for i in self.layer_map), "layer_map", "teacher layer indices are 0-based and >= 0")

    @property
    def needs_internals(self) -> bool:
        return self.hidden_mse > 0 or self.attention > 0


def even_layer_map(num_teacher: int, num_student: int) -> list[int]:
    """Teacher layer for each student layer, spread evenly and always ending at the top layer
    (6 -> 3: [1, 3, 5]; 6 -> 4: [1, 2, 4, 5]); TinyBERT's uniform mapping."""
    return [math.ceil((j + 1) * num_teacher / num_student) - 1 for j in range(num_student)]


def resolve_layer_map(cfg: DistillLossConfig, num_teacher: int, num_student: int) -> list[int]:
    if cfg.layer_map == "auto":
        return even_layer_map(num_teacher, num_student)
    lm = list(cfg.layer_map)
    if len(lm) != num_student or max(lm) >= num_teacher:
        raise ValueError(f"loss.layer_map {lm} needs {num_student} entries, each below {num_teacher} (teacher layers)")
    return lm


def _row_key(ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> bytes:
    keep = mask.astype(bool)
    return ids[keep].astype(np.int64).tobytes() + b"|" + types[keep].astype(np.int64).tobytes()


class TeacherLogitCache:
    """Teacher logits for every training row, computed once in eval mode (no dropout)."""

    def __init__(self, teacher: Any, enc: Encoded, pad_id: int = 0, batch_size: int = 128, progress: Any = None) -> None:
        logits = predict_logits(teacher, enc, batch_size, pad_id, progress)
        self._table: dict[bytes, np.ndarray] = {}
        for i in range(len(enc)):
            ids = np.asarray(enc.input_ids[i])
            self._table[_row_key(ids, np.asarray(enc.token_type_ids[i]), np.ones_like(ids))] = logits[i]

    def __len__(self) -> int:
        return len(self._table)

    def lookup(self, batch: dict[str, Any]) -> Any | None:
        """Logits for a torch batch, or None if any row is unknown (the caller runs the teacher)."""
        import torch

        ids, types, mask = (batch[k].numpy() for k in ("input_ids", "token_type_ids", "attention_mask"))
        rows = [self._table.get(_row_key(ids[r], types[r], mask[r])) for r in range(len(ids))]
        if any(r is None for r in rows):
            return None
        return torch.from_numpy(np.stack(rows))


@contextlib.contextmanager
def eager_attention(*models: Any) -> Iterator[None]:
    """SDPA returns no attention weights; the attention loss needs the eager kernel meanwhile."""
    before = [m.config._attn_implementation for m in models]
    for m in models:
        m.set_attn_implementation("eager")
    try:
        yield
    finally:
        for m, impl in zip(models, before):
            m.set_attn_implementation(impl)


def kd_term(student_logits: Any, teacher_logits: Any, temperature: float) -> Any:
    """Hinton's soft-target loss, scaled by T^2 so its gradient size does not depend on T."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.softmax(teacher_logits / t, -1), reduction="batchmean") * t * t


def attention_term(student_att: Any, teacher_att: Any, mask: Any) -> Any:
    """KL(teacher || student) between attention distributions over keys, averaged over valid
    query rows and heads; head counts that differ (pruned or narrower students) compare the
    head-averaged distribution."""
    import torch

    if student_att.shape[1] != teacher_att.shape[1]:
        student_att, teacher_att = student_att.mean(1, keepdim=True), teacher_att.mean(1, keepdim=True)
    eps = 1e-8
    kl = (teacher_att * (torch.log(teacher_att + eps) - torch.log(student_att + eps))).sum(-1)  # [B, h, Q]
    rows = mask[:, None, :].to(kl.dtype).expand_as(kl)
    return (kl * rows).sum() / rows.sum().clamp_min(1.0)


def hidden_term(student_h: Any, teacher_h: Any, mask: Any) -> Any:
    """Mean squared error over real (non-pad) tokens."""
    m = mask[..., None].to(student_h.dtype)
    return (((student_h - teacher_h) ** 2) * m).sum() / (m.sum() * student_h.shape[-1]).clamp_min(1.0)


class DistillationLoss:
    """loss_fn(model, batch) for `albert_edge.training.train`; pass `.params` to train(params=)
    so the hidden-state projection is learned with the student."""

    def __init__(self, cfg: DistillLossConfig, teacher: Any, student: Any, cache: TeacherLogitCache | None = None) -> None:
        import torch

        self.cfg = cfg
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.cache = cache
        self.layer_map = resolve_layer_map(cfg, teacher.config.num_hidden_layers, student.config.num_hidden_layers)
        hs, ht = student.config.hidden_size, teacher.config.hidden_size
        self.projection = torch.nn.Linear(hs, ht) if cfg.hidden_mse > 0 and hs != ht else None
        self.terms: dict[str, float] = {}
        self.teacher_batches = 0

    def context(self, student: Any) -> Any:
        """Wrap training in this: switches both models to eager attention when the attention term is on."""
        return eager_attention(student, self.teacher) if self.cfg.attention > 0 else contextlib.nullcontext()

    @property
    def params(self) -> list[Any]:
        return list(self.projection.parameters()) if self.projection is not None else []

    def _teacher(self, batch: dict[str, Any]) -> tuple[Any, Any]:
        import torch

        cached = None if (self.cache is None or self.cfg.needs_internals) else self.cache.lookup(batch)
        if cached is not None:
            return cached, None
        self.teacher_batches += 1
        with torch.no_grad():
            out = self.teacher(
                **model_inputs(batch), output_hidden_states=self.cfg.hidden_mse > 0, output_attentions=self.cfg.attention > 0
            )
        return out.logits, out

    def __call__(self, model: Any, batch: dict[str, Any]) -> Any:
        import torch.nn.functional as F

        cfg = self.cfg
        t_logits, t_out = self._teacher(batch)
        out = model(**model_inputs(batch), output_hidden_states=cfg.hidden_mse > 0, output_attentions=cfg.attention > 0)
        loss = 0.0
        terms: dict[str, Any] = {}
        if cfg.alpha_ce > 0:
            terms["ce"] = F.cross_entropy(out.logits, batch["labels"])
            loss = loss + cfg.alpha_ce * terms["ce"]
        if cfg.alpha_kd > 0:
            terms["kd"] = kd_term(out.logits, t_logits, cfg.temperature)
            loss = loss + cfg.alpha_kd * terms["kd"]
        mask = batch["attention_mask"]
        if cfg.hidden_mse > 0:
            pairs = [(0, 0)] + [(j + 1, t + 1) for j, t in enumerate(self.layer_map)]  # embeddings, then layers
            proj = self.projection or (lambda h: h)
            terms["hidden"] = sum(hidden_term(proj(out.hidden_states[s]), t_out.hidden_states[t], mask) for s, t in pairs) / len(pairs)
            loss = loss + cfg.hidden_mse * terms["hidden"]
        if cfg.attention > 0:
            terms["attention"] = sum(
                attention_term(out.attentions[j], t_out.attentions[t], mask) for j, t in enumerate(self.layer_map)
            ) / len(self.layer_map)
            loss = loss + cfg.attention * terms["attention"]
        self.terms = {k: float(v.detach()) for k, v in terms.items()}
        return loss


def build_loss(cfg: DistillLossConfig, teacher: Any, student: Any, train_enc: Encoded, pad_id: int, *, progress: Any = None,
               log: Any = None) -> DistillationLoss:
    """The loss for a stage: caches teacher logits over `train_enc` when only logits are distilled.
    progress: wraps the caching loop (a stage's `ctx.progress`); log: where the caching time is logged."""
    import time

    cache = None
    if cfg.alpha_kd > 0 and cfg.cache_teacher_logits and not cfg.needs_internals:
        t0 = time.perf_counter()
        cache = TeacherLogitCache(teacher, train_enc, pad_id, progress=progress)
        if log is not None:
            log.info("  cached teacher logits for %d rows in %.1fs", len(cache), time.perf_counter() - t0)
    return DistillationLoss(cfg, teacher, student, cache)
