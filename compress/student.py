"""Build an ALBERT student from any ALBERT-shaped teacher, initialised from it where shapes allow.

ALBERT's two ideas are used as compression operators:
- cross-layer sharing: a student group that stands for several layers starts from the mean
  of the teacher layers it replaces;
- factorised embeddings: the teacher's V x E_t table is cut to V x E by truncated SVD and the
  E x E_t factor, with the teacher's LayerNorm scale and its own mapping, is folded into the
  student's `embedding_hidden_mapping_in`.
Anything whose shape does not match stays randomly initialised, and the notes say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from albert_edge.schema import require
from compress.losses import even_layer_map


@dataclass(frozen=True)
class StudentConfig:
    """Student architecture; None means "the teacher's value"."""

    num_hidden_layers: int = 4
    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_attention_heads: int | None = None
    embedding_size: int = 128
    num_hidden_groups: int | None = None  # None: one group per layer (no sharing)

    def check(self) -> None:
        require(1 <= self.num_hidden_layers <= 48, "num_hidden_layers", f"{self.num_hidden_layers} layers is outside 1..48")
        require(self.embedding_size >= 2, "embedding_size", "an embedding needs at least 2 dimensions")
        for name in ("hidden_size", "intermediate_size", "num_attention_heads"):
            v = getattr(self, name)
            require(v is None or v >= 1, name, f"{v} must be positive")
        if self.hidden_size is not None and self.num_attention_heads is not None:
            require(self.hidden_size % self.num_attention_heads == 0, "num_attention_heads",
                    f"hidden_size {self.hidden_size} is not divisible by {self.num_attention_heads} heads")
        g = self.num_hidden_groups
        if g is not None:
            require(
                1 <= g <= self.num_hidden_layers and self.num_hidden_layers % g == 0,
                "num_hidden_groups",
                f"{g} groups cannot share {self.num_hidden_layers} layers evenly",
                "use a divisor of num_hidden_layers (1 = ALBERT's full sharing)",
            )


@dataclass(frozen=True)
class InitConfig:
    """How the student is initialised from the teacher."""

    layers: Literal["every_k", "random"] | tuple[int, ...] = "every_k"  # or teacher layer indices, 0-based
    svd_embeddings: bool = True
    svd_basis: Literal["inputs", "word"] = "inputs"  # see embedding_basis

    def check(self) -> None:
        if isinstance(self.layers, tuple):
            require(len(self.layers) > 0 and all(i >= 0 for i in self.layers), "layers", "give 0-based teacher layer indices")


def select_layers(num_teacher: int, num_student: int, layers: str | tuple[int, ...]) -> list[int]:
    """Teacher layer copied into each student layer."""
    if layers == "every_k":
        return even_layer_map(num_teacher, num_student)
    sel = list(layers)
    if len(sel) != num_student or max(sel) >= num_teacher:
        raise ValueError(f"init.layers {sel} needs {num_student} indices below {num_teacher}")
    return sel


def student_config(teacher_config: Any, s: StudentConfig) -> Any:
    """The teacher's AlbertConfig with the student's sizes."""
    from transformers import AlbertConfig

    d = teacher_config.to_dict()
    for key in ("architectures", "transformers_version", "sliced_linears", "heads_per_group", "intermediate_per_group"):
        d.pop(key, None)
    d.update(
        num_hidden_layers=s.num_hidden_layers,
        num_hidden_groups=s.num_hidden_groups or s.num_hidden_layers,
        inner_group_num=1,
        embedding_size=s.embedding_size,
        hidden_size=s.hidden_size or teacher_config.hidden_size,
        intermediate_size=s.intermediate_size or teacher_config.intermediate_size,
        num_attention_heads=s.num_attention_heads or teacher_config.num_attention_heads,
    )
    return AlbertConfig(**d)


def svd_factorize(table: Any, rank: int) -> tuple[Any, Any]:
    """Best rank-`rank` factors (A [V x r], B [r x E]) of `table` (Eckart-Young): A @ B ~ table."""
    import torch

    u, s, vh = torch.linalg.svd(table.double(), full_matrices=False)
    return (u[:, :rank] * s[:rank]).to(table.dtype), vh[:rank].to(table.dtype)


def _zero_mean_basis(e: int) -> Any:
    """(e-1) x e orthonormal rows, each orthogonal to the all-ones vector."""
    import torch

    centering = torch.eye(e, dtype=torch.float64) - 1.0 / e
    q, _ = torch.linalg.qr(centering[:, : e - 1])
    return q.T


def embedding_basis(
    teacher: Any, rank: int, how: str = "inputs", token_counts: Any = None, positions: int | None = None
) -> tuple[Any, float]:
    """(rank x E_t orthonormal basis, fraction of input energy it keeps) for the factorisation.

    "word": the top right singular vectors of the centred word table (plain truncated SVD).
    "inputs": the top principal directions of what the teacher's LayerNorm actually sees,
    word + position + token type: the word table weighted by token frequency (uniform if no
    counts), positions up to `positions`. Position vectors lie mostly outside the word
    table's top subspace (MiniLM: 12% kept at rank 127), so "inputs" keeps far more of them.
    """
    import torch

    e = teacher.albert.embeddings

    def centred(w: Any) -> Any:
        w = w.detach().double()
        return w - w.mean(1, keepdim=True)

    w, p, t = centred(e.word_embeddings.weight), centred(e.position_embeddings.weight), centred(e.token_type_embeddings.weight)
    p = p[: positions or p.shape[0]]
    f = torch.full((w.shape[0],), 1.0 / w.shape[0], dtype=torch.float64)
    if token_counts is not None:
        counts = torch.as_tensor(token_counts, dtype=torch.float64)
        f = (counts + 1e-3) / (counts + 1e-3).sum()  # every token keeps a little weight
    cov = (w * f[:, None]).T @ w + p.T @ p / p.shape[0] + t.T @ t / t.shape[0]
    if how == "word":
        _, basis = svd_factorize(w, rank)
        basis = basis.double()
    else:
        _, vecs = torch.linalg.eigh(cov)
        basis = vecs[:, -rank:].flip(1).T if rank > 0 else vecs[:, :0].T
    kept = float(torch.trace(basis @ cov @ basis.T) / torch.trace(cov))
    return basis, kept


def factorized_embedding_init(
    teacher: Any, student: Any, how: str = "inputs", token_counts: Any = None, positions: int | None = None
) -> float:
    """Initialise the student's embeddings (size E <= teacher's E_t) and mapping_in; returns
    the fraction of input energy kept.

    Tables are centred (the teacher's LayerNorm removes the mean anyway), projected on an
    (E-1)-dim basis (`embedding_basis`) and written into the zero-mean subspace of R^E, so
    the student's LayerNorm sees the same vectors; the teacher's LayerNorm scale and shift,
    the norm correction sqrt(E_t * kept / E) and the teacher's mapping_in are folded into
    the student's mapping_in: V x E_t ~ (V x E)(E x E_t). With E = E_t it is exact.
    """
    import torch

    te, se = teacher.albert.embeddings, student.albert.embeddings
    n, e = te.word_embeddings.weight.shape[1], se.word_embeddings.weight.shape[1]
    if e > n:
        raise ValueError(f"student embedding_size {e} exceeds the teacher's {n}")
    with torch.no_grad():
        basis, kept = embedding_basis(teacher, e - 1, how, token_counts, positions)
        to_student = basis.T @ _zero_mean_basis(e)  # n x e
        for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
            w = getattr(te, name).weight.double()
            getattr(se, name).weight.copy_(((w - w.mean(1, keepdim=True)) @ to_student).float())
        se.LayerNorm.weight.fill_(1.0)
        se.LayerNorm.bias.zero_()
        se.LayerNorm.eps = te.LayerNorm.eps
        tm, sm = teacher.albert.encoder.embedding_hidden_mapping_in, student.albert.encoder.embedding_hidden_mapping_in
        if tm.weight.shape[0] == sm.weight.shape[0]:
            gamma, beta = te.LayerNorm.weight.double(), te.LayerNorm.bias.double()
            m = tm.weight.double()  # H x n
            sm.weight.copy_((math.sqrt(n * kept / e) * (m * gamma) @ to_student).float())
            sm.bias.copy_((m @ beta + tm.bias.double()).float())
    return kept


def _teacher_layers(teacher: Any) -> list[Any]:
    """The module that computes each teacher layer (shared groups repeat the same module)."""
    cfg = teacher.config
    groups = teacher.albert.encoder.albert_layer_groups
    return [groups[int(i / (cfg.num_hidden_layers / cfg.num_hidden_groups))].albert_layers[0] for i in range(cfg.num_hidden_layers)]


def _mean_state(layers: list[Any]) -> dict[str, Any]:
    states = [layer.state_dict() for layer in layers]
    return {k: sum(s[k].double() for s in states).div(len(states)).to(states[0][k].dtype) for k in states[0]}


def _layers_compatible(tc: Any, sc: Any) -> str:
    for key in ("hidden_size", "intermediate_size", "num_attention_heads", "hidden_act"):
        if getattr(tc, key) != getattr(sc, key):
            return f"{key} differs ({getattr(tc, key)} vs {getattr(sc, key)})"
    if getattr(tc, "sliced_linears", False):
        return "the teacher is structurally pruned"
    if tc.inner_group_num != 1:
        return "the teacher has inner_group_num > 1"
    return ""


def build_student(
    teacher: Any, s: StudentConfig, init: InitConfig, seed: int = 0, token_counts: Any = None, positions: int | None = None
) -> tuple[Any, list[str]]:
    """(student AlbertForSequenceClassification, notes on what was copied and what is random).

    token_counts (per vocabulary id, from the training set) and positions (max sequence
    length) weight the "inputs" embedding basis towards what the model will really see."""
    import torch
    from transformers import AlbertForSequenceClassification

    tc = teacher.config
    sc = student_config(tc, s)
    torch.manual_seed(seed)
    student = AlbertForSequenceClassification(sc)
    notes: list[str] = []
    if init.layers == "random":
        return student, ["init.layers is random: every weight is randomly initialised"]

    # encoder layers: copy / average the selected teacher layers
    why = _layers_compatible(tc, sc)
    if why:
        notes.append(f"encoder layers are random: {why}")
    else:
        sel = select_layers(tc.num_hidden_layers, sc.num_hidden_layers, init.layers)
        t_layers = _teacher_layers(teacher)
        per_group = sc.num_hidden_layers // sc.num_hidden_groups
        for g, group in enumerate(student.albert.encoder.albert_layer_groups):
            src = sel[g * per_group:(g + 1) * per_group]
            group.albert_layers[0].load_state_dict(_mean_state([t_layers[i] for i in src]))
            notes.append(f"group {g} <- teacher layer{'s' if len(src) > 1 else ''} {src}" + (" (mean)" if len(src) > 1 else ""))

    # embeddings and the mapping into the hidden size
    e_t, e_s = tc.embedding_size, sc.embedding_size
    same_hidden = tc.hidden_size == sc.hidden_size
    if e_s == e_t:
        student.albert.embeddings.load_state_dict(teacher.albert.embeddings.state_dict())
        if same_hidden:
            student.albert.encoder.embedding_hidden_mapping_in.load_state_dict(teacher.albert.encoder.embedding_hidden_mapping_in.state_dict())
        notes.append("embeddings copied" + ("" if same_hidden else "; embedding_hidden_mapping_in is random (hidden size differs)"))
    elif e_s < e_t and init.svd_embeddings:
        kept = factorized_embedding_init(teacher, student, init.svd_basis, token_counts, positions)
        notes.append(
            f"embeddings factorised by truncated SVD {e_t} -> {e_s} ({init.svd_basis} basis keeps {100 * kept:.1f}% of input energy)"
            + ("" if same_hidden else "; embedding_hidden_mapping_in is random (hidden size differs)")
        )
    else:
        notes.append(f"embeddings are random (embedding_size {e_s} vs teacher {e_t}, svd_embeddings={init.svd_embeddings})")

    # pooler and classifier
    if same_hidden:
        student.albert.pooler.load_state_dict(teacher.albert.pooler.state_dict())
        student.classifier.load_state_dict(teacher.classifier.state_dict())
        notes.append("pooler and classifier copied")
    else:
        notes.append("pooler and classifier are random (hidden size differs)")
    return student, notes
