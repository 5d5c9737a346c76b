"""The one training loop: AdamW, linear warm-up and decay, seeded, best checkpoint on the
held-out validation rows. Fine-tuning, distillation and pruning recovery call `train` with their loss."""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from albert_edge.data import Encoded, batch_indices, pad_batch
from albert_edge.schema import require

log = logging.getLogger("albert_edge")


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule; `epochs` may be fractional (0.5 = half an epoch)."""

    epochs: float = 1.0
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    evals_per_epoch: int = 1
    eval_batch_size: int = 128

    def check(self) -> None:
        require(0 <= self.epochs <= 100, "epochs", f"{self.epochs} epochs is outside 0..100")
        require(1 <= self.batch_size <= 4096, "batch_size", f"batch size {self.batch_size} is outside 1..4096")
        require(0 < self.lr < 1, "lr", f"learning rate {self.lr} should be in (0, 1)", "typical: 2e-5 .. 1e-3")
        require(0 <= self.warmup_ratio < 1, "warmup_ratio", f"{self.warmup_ratio} should be in [0, 1)")
        require(self.evals_per_epoch >= 1, "evals_per_epoch", "evaluate at least once per epoch")


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def to_torch(batch: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v) for k, v in batch.items() if k != "index"}


def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def predict_logits(
    model: Any, enc: Encoded, batch_size: int = 128, pad_id: int = 0, progress: Callable[..., Any] | None = None
) -> np.ndarray:
    """Eval-mode logits in the original example order."""
    import torch

    model.eval()
    out = np.zeros((len(enc), model.config.num_labels), dtype=np.float32)
    batches = batch_indices(enc.lengths(), batch_size, shuffle=False)
    it = progress(batches, desc="eval") if progress else batches
    with torch.inference_mode():
        for idx in it:
            b = to_torch(pad_batch(enc, idx, pad_id))
            out[idx] = model(**model_inputs(b)).logits.float().numpy()
    return out


def cross_entropy_loss(model: Any, batch: dict[str, Any]) -> Any:
    import torch.nn.functional as F

    return F.cross_entropy(model(**model_inputs(batch)).logits, batch["labels"])


@dataclass
class TrainResult:
    best_accuracy: float
    best_step: int
    steps: int
    seconds: float
    history: list[dict[str, float]]


def total_steps(num_examples: int, cfg: TrainConfig) -> int:
    """Optimiser steps `train` will take (schedules such as gradual pruning need it up front)."""
    per_epoch = math.ceil(num_examples / cfg.batch_size)
    return max(1, round(per_epoch * cfg.epochs)) if cfg.epochs > 0 else 0


class ProgressLog:
    """Steady progress lines for logs when no progress bar is drawn (CI, `| tee`, nohup):
    one line every `every_s` seconds or every `every_frac` of the work, whichever comes first."""

    def __init__(self, total: int, what: str = "train", every_s: float = 30.0, every_frac: float = 0.1) -> None:
        self.total, self.what, self.every_s = max(1, total), what, every_s
        self.every_steps = max(1, int(self.total * every_frac))
        self.t0 = self.last_t = time.perf_counter()
        self.last_step = 0

    def update(self, step: int, loss: float) -> None:
        now = time.perf_counter()
        if step < self.total and now - self.last_t < self.every_s and step - self.last_step < self.every_steps:
            return
        elapsed = now - self.t0
        eta = elapsed / step * (self.total - step) if step else 0.0
        log.info("  %s step %d/%d (%.0f%%) loss %.4f, %.0fs elapsed, ~%.0fs left", self.what, step, self.total,
                 100.0 * step / self.total, loss, elapsed, eta)
        self.last_t, self.last_step = now, step


def train(
    model: Any,
    train_enc: Encoded,
    val_enc: Encoded,
    cfg: TrainConfig,
    loss_fn: Callable[[Any, dict[str, Any]], Any] = cross_entropy_loss,
    *,
    seed: int = 0,
    pad_id: int = 0,
    progress: Callable[..., Any] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    params: list[Any] | None = None,
    best_from: int = 0,
) -> TrainResult:
    """Train `model` in place and leave it at its best checkpoint by accuracy on `val_enc`
    (held-out rows carved from train: the reported eval split never makes this choice).

    loss_fn(model, torch_batch) -> scalar loss. on_step(step, total) runs after each
    optimiser step (gradual pruning uses it). params: extra trainable parameters
    (for example distillation projections). best_from: evaluations before this step are
    logged but never kept as the best checkpoint (gradual pruning must not restore a less
    sparse model); the last step is always evaluated, so one candidate always exists.
    """
    import torch

    seed_everything(seed)
    per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    total = total_steps(len(train_enc), cfg)
    eval_every = max(1, per_epoch // cfg.evals_per_epoch)
    trainable = [p for p in model.parameters() if p.requires_grad] + list(params or [])
    decay = [p for p in trainable if p.ndim >= 2]
    no_decay = [p for p in trainable if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    warmup = int(total * cfg.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )

    def evaluate() -> float:
        logits = predict_logits(model, val_enc, cfg.eval_batch_size, pad_id)
        return float((logits.argmax(-1) == np.asarray(val_enc.labels)).mean())

    best_acc, best_step, best_state = -1.0, 0, None
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    step = 0
    bar = progress(total=total, desc="train") if progress else None
    steady = ProgressLog(total) if bar is None or getattr(bar, "disable", False) else None
    epoch = 0
    running = 0.0
    while step < total:
        model.train()
        for idx in batch_indices(train_enc.lengths(), cfg.batch_size, shuffle=True, seed=seed + epoch):
            batch = to_torch(pad_batch(train_enc, idx, pad_id))
            loss = loss_fn(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            value = loss.item()
            running = 0.98 * running + 0.02 * value if step > 1 else value
            if on_step:
                on_step(step, total)
            if steady is not None:
                steady.update(step, running)
            elif bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running:.4f}")
            if step % eval_every == 0 or step == total:
                acc = evaluate()
                history.append({"step": step, "loss": running, "val_accuracy": acc})
                log.info("  step %d/%d loss %.4f validation accuracy %.2f%%", step, total, running, 100 * acc)
                if step >= best_from and acc > best_acc:
                    best_acc, best_step = acc, step
                    best_state = copy.deepcopy(model.state_dict())
                model.train()
            if step >= total:
                break
        epoch += 1
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    else:
        best_acc = evaluate()
    model.eval()
    return TrainResult(best_acc, best_step, step, time.perf_counter() - t0, history)
