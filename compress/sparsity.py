"""Unstructured gradual magnitude pruning (Zhu & Gupta 2017) during recovery fine-tuning.

Sparsity follows the cubic schedule s_t = s_f + (s_i - s_f) * (1 - progress)^3 between
`start` and `end` (fractions of the training steps); masks are recomputed every `every`
steps from weight magnitudes and re-applied after every optimiser step, so pruned weights
stay zero. At the end the masks are already folded in (the weights are plain zeros).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any


def prunable_weights(model: Any, include_embeddings: bool = False) -> dict[str, Any]:
    """Encoder Linear weights (each shared module once); optionally the word-embedding table."""
    out = {}
    for name, p in model.named_parameters():
        if name.startswith("albert.encoder.albert_layer_groups") and name.endswith(".weight") and p.ndim == 2:
            out[name] = p
        elif include_embeddings and name == "albert.embeddings.word_embeddings.weight":
            out[name] = p
    return out


def schedule_window(total: int, start: float, end: float) -> tuple[int, int]:
    """(first, last) optimiser step of the pruning ramp; the last step reaches the final sparsity."""
    t0 = round(start * total)
    return t0, max(t0 + 1, round(end * total))


def cubic_sparsity(step: int, total: int, final: float, start: float = 0.0, end: float = 0.7, initial: float = 0.0) -> float:
    """Target sparsity after `step` of `total` optimiser steps."""
    t0, t1 = schedule_window(total, start, end)
    if step <= t0:
        return initial
    if step >= t1:
        return final
    return final + (initial - final) * (1.0 - (step - t0) / (t1 - t0)) ** 3


class GradualMagnitudePruner:
    """on_step(step, total) for `albert_edge.training.train`."""

    def __init__(
        self, weights: dict[str, Any], final: float, start: float = 0.0, end: float = 0.7, every: int = 10, scope: str = "global"
    ) -> None:
        import torch

        self.weights = weights
        self.final, self.start, self.end, self.every, self.scope = final, start, end, max(1, every), scope
        self.masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
        self.target = 0.0
        self.history: list[tuple[int, float]] = []

    def _recompute(self, sparsity: float) -> None:
        import torch

        with torch.no_grad():
            if self.scope == "global":
                flat = torch.cat([w.detach().abs().flatten() for w in self.weights.values()])
                k = int(sparsity * flat.numel())
                threshold = torch.kthvalue(flat, k).values if k > 0 else flat.new_tensor(-1.0)
                for n, w in self.weights.items():
                    self.masks[n] = w.detach().abs() > threshold
            else:
                for n, w in self.weights.items():
                    k = int(sparsity * w.numel())
                    threshold = torch.kthvalue(w.detach().abs().flatten(), k).values if k > 0 else w.new_tensor(-1.0)
                    self.masks[n] = w.detach().abs() > threshold
        self.target = sparsity

    def apply(self) -> None:
        import torch

        with torch.no_grad():
            for n, w in self.weights.items():
                w.mul_(self.masks[n])

    def on_step(self, step: int, total: int) -> None:
        target = cubic_sparsity(step, total, self.final, self.start, self.end)
        if target > self.target and (step % self.every == 0 or target >= self.final):
            self._recompute(target)
            self.history.append((step, round(target, 4)))
        self.apply()

    def finish(self) -> None:
        """Reach the final sparsity now (zero recovery steps: one-shot pruning) and fold the masks."""
        if self.target < self.final:
            self._recompute(self.final)
        self.apply()

    def final_step(self, total: int) -> int:
        """First step at the final sparsity: pass it as train(best_from=)."""
        return schedule_window(total, self.start, self.end)[1]


def measured_sparsity(weights: dict[str, Any]) -> float:
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    return zeros / max(1, sum(w.numel() for w in weights.values()))


def model_sparsity(model: Any) -> float:
    """Fraction of all parameters that are exactly zero."""
    zeros = sum(int((p == 0).sum()) for p in model.parameters())
    return zeros / max(1, sum(p.numel() for p in model.parameters()))


def gzip_size(path: Path) -> int:
    """Bytes of the file gzip-compressed (zeros compress; dense weights barely do)."""
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=6))


def weights_file(model_dir: Path) -> Path:
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if len(files) != 1:
        raise FileNotFoundError(f"{model_dir}: expected one .safetensors file, found {len(files)}")
    return files[0]


class UnstructuredPruning:
    """One unstructured pruning run alongside recovery training: the weights it prunes, and the
    pruner whose on_step(step, total) the training loop calls (our gradual magnitude pruner, or
    INC's pattern pruner with `backend: inc`, compress.prune_inc)."""

    def __init__(self, model: Any, total_steps: int, *, sparsity: float, scope: str = "global", prune_start: float = 0.0,
                 prune_end: float = 0.7, prune_every: int = 10, include_embeddings: bool = False, backend: str = "native",
                 inc: Any = None) -> None:
        """ImportError when `backend: inc` and neural-compressor 2.x does not import."""
        self.weights = prunable_weights(model, include_embeddings)
        start, end = schedule_window(total_steps, prune_start, prune_end)
        if backend == "inc":
            from compress.prune_inc import IncPruner

            self.pruner: Any = IncPruner(model, inc, sparsity, start, max(start, end - 1))
        else:
            self.pruner = GradualMagnitudePruner(self.weights, sparsity, prune_start, prune_end, prune_every, scope)
        self.on_step = self.pruner.on_step
        self.best_from = min(end, total_steps)  # the first step a checkpoint may be chosen at: the final sparsity

    @property
    def schedule(self) -> list[tuple[int, float]] | None:
        """(step, sparsity) at each mask update; None for INC's pruner."""
        return self.pruner.history if isinstance(self.pruner, GradualMagnitudePruner) else None

    def finish(self, model: Any) -> dict[str, float]:
        """Reach the final sparsity and fold the masks in; the sparsity reached (pruned weights, all parameters)."""
        self.pruner.finish()
        return {"sparsity": round(measured_sparsity(self.weights), 4), "model_sparsity": round(model_sparsity(model), 4)}
