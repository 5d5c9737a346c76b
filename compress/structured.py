"""Structured pruning of ALBERT: score attention heads and FFN neurons, then slice them out.

Gates are multipliers on the inputs of `attention.dense` (one per head) and `ffn_output`
(one per neuron). Gate value 0 is the masked model; slicing removes the same rows and columns
physically, so the two agree. The first-order Taylor score of a structure is |dL/dgate| at
gate = 1, which equals |sum of w * dL/dw| over the weights the structure feeds (Molchanov et
al. 2019; Michel et al. 2019 for heads), accumulated over batches. A shared ALBERT layer is
one module with one gate vector, so its score sums over all its repeats and it is pruned once.
`prune_structured` is the whole step the prune stage takes: score, check, select, slice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Plan:
    """Structures to remove, per unique ALBERT layer (index into `unique_layers`)."""

    heads: list[list[int]]
    neurons: list[list[int]]


def unique_layers(model: Any) -> list[Any]:
    """Each distinct AlbertLayer module once (groups x inner layers), in execution order."""
    return [layer for group in model.albert.encoder.albert_layer_groups for layer in group.albert_layers]


def head_count(layer: Any) -> int:
    return layer.attention.query.out_features // layer.attention.attention_head_size


def neuron_count(layer: Any) -> int:
    return layer.ffn.out_features


@contextlib.contextmanager
def gates(model: Any, requires_grad: bool = False) -> Iterator[tuple[list[Any], list[Any]]]:
    """Attach (head_gates, neuron_gates), one tensor of ones per unique layer, for the duration."""
    import torch

    head_g, neuron_g, handles = [], [], []
    for layer in unique_layers(model):
        hg = torch.ones(head_count(layer), requires_grad=requires_grad)
        ng = torch.ones(neuron_count(layer), requires_grad=requires_grad)
        size = layer.attention.attention_head_size
        handles.append(layer.attention.dense.register_forward_pre_hook(lambda _m, a, g=hg, d=size: (a[0] * g.repeat_interleave(d),)))
        handles.append(layer.ffn_output.register_forward_pre_hook(lambda _m, a, g=ng: (a[0] * g,)))
        head_g.append(hg)
        neuron_g.append(ng)
    try:
        yield head_g, neuron_g
    finally:
        for h in handles:
            h.remove()


def taylor_scores(
    model: Any, batches: Iterable[dict[str, Any]], loss_fn: Callable[[Any, dict[str, Any]], Any]
) -> tuple[list[Any], list[Any]]:
    """|dL/dgate| per head and neuron, summed over batches (eval mode: no dropout noise)."""
    import torch

    model.eval()
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)  # only the gates need gradients
    try:
        with gates(model, requires_grad=True) as (hg, ng):
            h_score = [torch.zeros_like(g) for g in hg]
            n_score = [torch.zeros_like(g) for g in ng]
            for batch in batches:
                grads = torch.autograd.grad(loss_fn(model, batch), hg + ng)
                for acc, g in zip(h_score + n_score, grads):
                    acc += g.abs()
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
    return h_score, n_score


def magnitude_scores(model: Any) -> tuple[list[Any], list[Any]]:
    """L2 norm of each head's Q/K/V rows and output columns, and of each neuron's in/out weights."""
    heads, neurons = [], []
    for layer in unique_layers(model):
        att, d = layer.attention, layer.attention.attention_head_size
        n = head_count(layer)
        rows = sum(m.weight.detach().reshape(n, d, -1).pow(2).sum((1, 2)) for m in (att.query, att.key, att.value))
        cols = att.dense.weight.detach().reshape(att.dense.out_features, n, d).pow(2).sum((0, 2))
        heads.append((rows + cols).sqrt())
        neurons.append((layer.ffn.weight.detach().pow(2).sum(1) + layer.ffn_output.weight.detach().pow(2).sum(0)).sqrt())
    return heads, neurons


def amount(target: float | int, available: int) -> int:
    """A fraction (float < 1) or a count (int) of `available` structures."""
    return round(target * available) if isinstance(target, float) else int(target)


def too_many(scores: list[Any], target: float | int, global_ranking: bool, what: str) -> str:
    """Why a count (int) `target` cannot be removed while every layer keeps one structure, or
    "" (a fraction is rounded, so `select` may keep one back; a count is taken literally)."""
    if not isinstance(target, int) or not scores:
        return ""
    if global_ranking:
        total, most = sum(len(s) for s in scores), sum(len(s) for s in scores) - len(scores)
        if target > most:
            return f"removing {target} of {total} {what} would empty a layer; at most {most} can go (one kept per layer)"
        return ""
    fewest = min(len(s) for s in scores)
    if target > fewest - 1:
        return f"removing {target} {what} per layer would empty a layer of {fewest}; use at most {fewest - 1}"
    return ""


def select(scores: list[Any], target: float | int, global_ranking: bool) -> list[list[int]]:
    """Lowest-scoring structures to remove; every layer keeps at least one.

    Per-layer ranking removes `target` (fraction or count) in each layer. Global ranking
    normalises each layer's scores by their L2 norm (Michel et al.) and removes `target`
    of the whole model, wherever the least important structures are.
    """
    import torch

    if not global_ranking:
        out = []
        for s in scores:
            k = min(amount(target, len(s)), len(s) - 1)
            out.append(sorted(torch.argsort(s)[:k].tolist()) if k > 0 else [])
        return out
    total = sum(len(s) for s in scores)
    k = min(amount(target, total), total - len(scores))
    ranked = sorted(
        ((float(v), li, i) for li, s in enumerate(scores) for i, v in enumerate((s / s.norm().clamp_min(1e-12)).tolist())),
    )
    out: list[list[int]] = [[] for _ in scores]
    for _, li, i in ranked:
        if k <= 0:
            break
        if len(out[li]) < len(scores[li]) - 1:
            out[li].append(i)
            k -= 1
    return [sorted(x) for x in out]


def _slice_linear(linear: Any, keep: Any, dim: int) -> Any:
    import torch

    w = linear.weight.detach().index_select(dim, keep).clone()
    out = torch.nn.Linear(w.shape[1], w.shape[0], bias=linear.bias is not None)
    out.weight.data.copy_(w)
    if linear.bias is not None:
        out.bias.data.copy_(linear.bias.detach() if dim == 1 else linear.bias.detach().index_select(0, keep))
    return out


def apply_plan(model: Any, plan: Plan) -> None:
    """Slice the planned heads and neurons out of the model in place and record the new
    shapes in its config (`sliced_linears` makes albert_edge.models.load_model rebuild them)."""
    import torch

    for layer, heads, neurons in zip(unique_layers(model), plan.heads, plan.neurons):
        att = layer.attention
        d = att.attention_head_size
        if heads:
            keep_heads = [h for h in range(head_count(layer)) if h not in set(heads)]
            keep = torch.tensor([h * d + i for h in keep_heads for i in range(d)])
            att.query, att.key, att.value = (_slice_linear(m, keep, 0) for m in (att.query, att.key, att.value))
            att.dense = _slice_linear(att.dense, keep, 1)
            att.num_attention_heads = len(keep_heads)
            att.all_head_size = len(keep_heads) * d
        if neurons:
            keep = torch.tensor([i for i in range(neuron_count(layer)) if i not in set(neurons)])
            layer.ffn = _slice_linear(layer.ffn, keep, 0)
            layer.ffn_output = _slice_linear(layer.ffn_output, keep, 1)
    model.config.sliced_linears = True
    model.config.heads_per_group = [head_count(layer) for layer in unique_layers(model)]
    model.config.intermediate_per_group = [neuron_count(layer) for layer in unique_layers(model)]


def masked(model: Any, plan: Plan) -> Any:
    """Context manager: the model with the planned structures gated to zero (nothing removed)."""

    @contextlib.contextmanager
    def _ctx() -> Iterator[None]:
        with gates(model) as (hg, ng):
            for g, idx in zip(hg + ng, plan.heads + plan.neurons):
                g[idx] = 0.0
            yield

    return _ctx()


def structure_counts(model: Any) -> dict[str, int]:
    layers = unique_layers(model)
    return {"heads": sum(head_count(lay) for lay in layers), "ffn_neurons": sum(neuron_count(lay) for lay in layers)}


class PruneAmountError(ValueError):
    """A count of heads or FFN neurons to remove that would empty a layer of this model; the
    message names the setting (`heads: ...`, `ffn: ...`)."""


def prune_structured(
    model: Any,
    *,
    heads: float | int,
    ffn: float | int,
    importance: str = "taylor",
    global_ranking: bool = False,
    loss: Any = None,
    train: Any = None,
    batch_size: int = 32,
    score_batches: int = 16,
    seed: int = 0,
    pad_id: int = 0,
    log: logging.Logger | None = None,
) -> tuple[dict[str, Any], Plan]:
    """Score every head and FFN neuron, then slice the lowest-scoring out of `model` in place:
    `heads` / `ffn` each a fraction or a count, per layer or (global_ranking) over the model.

    importance `taylor`: first-order Taylor scores on `score_batches` shuffled batches of the
    `train` rows (albert_edge.data.Encoded) under the distillation `loss` (compress.losses);
    `magnitude`: weight norms. Returns the before/after counts (the prune stage's metrics) and
    the plan. PruneAmountError when a count would empty a layer."""
    log = log or logging.getLogger("albert_edge")
    if importance == "taylor":
        from albert_edge.data import batch_indices, pad_batch
        from albert_edge.training import to_torch

        idx = batch_indices(train.lengths(), batch_size, shuffle=True, seed=seed)[:score_batches]
        batches = (to_torch(pad_batch(train, i, pad_id)) for i in idx)
        with loss.context(model):
            head_s, neuron_s = taylor_scores(model, batches, loss)
    else:
        head_s, neuron_s = magnitude_scores(model)
    for key, scores, what in (("heads", head_s, "heads"), ("ffn", neuron_s, "FFN neurons")):
        problem = too_many(scores, heads if key == "heads" else ffn, global_ranking, what)
        if problem:
            raise PruneAmountError(f"{key}: {problem}")
    plan = Plan(select(head_s, heads, global_ranking), select(neuron_s, ffn, global_ranking))
    before = structure_counts(model)
    apply_plan(model, plan)
    after = structure_counts(model)
    log.info(
        "  removed %d/%d heads and %d/%d FFN neurons (%s, %s ranking)",
        before["heads"] - after["heads"],
        before["heads"],
        before["ffn_neurons"] - after["ffn_neurons"],
        before["ffn_neurons"],
        importance,
        "global" if global_ranking else "per-layer",
    )
    return {"heads_before": before["heads"], "heads_after": after["heads"],
            "ffn_neurons_before": before["ffn_neurons"], "ffn_neurons_after": after["ffn_neurons"],
            "heads_per_group": model.config.heads_per_group}, plan
