"""The one parity checker: every exported or quantised file is run on held-out validation rows
and compared with the PyTorch model before a stage may call it done (Optimum-style
"export, then always validate").

fp32 files must match the reference within `atol` on every logit with identical argmax;
reduced-precision files (fp16, int8-*) must agree on argmax for at least the budget's
`min_agreement` of the rows. Files are always run through
`edge_runtime`, the same code the devices and benchmarks use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.data import Encoded, batch_indices, pad_batch

FP32_PRECISIONS = ("fp32",)
MAX_TABLE_ROWS = 10


def split_accuracies(val_logits: np.ndarray, val: Encoded, eval_logits: np.ndarray, eval_enc: Encoded) -> dict[str, float]:
    """A file's accuracy on the held-out validation rows (what gates judge) and on the eval
    split (what tables report, measured once)."""
    return {"val_accuracy": float((val_logits.argmax(-1) == np.asarray(val.labels)).mean()),
            "accuracy": float((eval_logits.argmax(-1) == np.asarray(eval_enc.labels)).mean())}


def clip_encoded(enc: Encoded, max_len: int) -> Encoded:
    """Truncate every row to `max_len` tokens: the reference for files whose largest bucket is
    shorter than the longest row must see the same truncated input as the file does."""
    return Encoded([r[:max_len] for r in enc.input_ids], [r[:max_len] for r in enc.token_type_ids], list(enc.labels))


def torch_logits(model: Any, enc: Encoded, batch_size: int = 64, pad_id: int = 0) -> np.ndarray:
    """Reference fp32 logits of the PyTorch model, in example order."""
    from albert_edge.training import predict_logits

    return predict_logits(model, enc, batch_size=batch_size, pad_id=pad_id)


def file_logits(
    path: str | Path,
    enc: Encoded,
    *,
    runtime: str | None = None,
    threads: int = 1,
    buckets: Sequence[int] | None = None,
    batch_size: int = 32,
    pad_id: int = 0,
) -> np.ndarray:
    """Logits of an .onnx/.tflite file via edge_runtime, in example order.

    buckets: each example is padded to pick_bucket(len(example), buckets), as a phone app
    would do with fixed-shape files (default: the buckets a bucketed file declares). Without buckets a fixed-shape file gets every example
    padded to its sequence length, and a dynamic file gets length-sorted batches.
    """
    from edge_runtime import open_model, pick_bucket

    model = open_model(str(path), runtime=runtime, threads=threads)
    buckets = buckets or getattr(model, "buckets", ())  # bucketed .tflite files declare theirs
    lengths = enc.lengths()
    if buckets:
        groups: dict[int, list[int]] = {}
        for i, n in enumerate(lengths):
            groups.setdefault(pick_bucket(n, list(buckets)), []).append(i)
        batches = [(idx[s : s + batch_size], width) for width, idx in groups.items() for s in range(0, len(idx), batch_size)]
    elif model.fixed_seq_len:
        order = list(range(len(enc)))
        batches = [(order[s : s + batch_size], model.fixed_seq_len) for s in range(0, len(order), batch_size)]
    else:
        batches = [(idx, None) for idx in batch_indices(lengths, batch_size, shuffle=False)]
    out: np.ndarray | None = None
    for idx, width in batches:
        b = pad_batch(enc, idx, pad_id, pad_to=width)
        logits = np.asarray(model(b["input_ids"], b["attention_mask"], b["token_type_ids"]), dtype=np.float32)
        if out is None:
            out = np.zeros((len(enc), logits.shape[-1]), dtype=np.float32)
        out[idx] = logits
    if out is None:
        raise ValueError("empty parity slice")
    return out


@dataclass
class ParityResult:
    """The verdict for one file: numbers for the manifest and a table of what differed."""

    name: str
    precision: str
    ok: bool
    max_abs_diff: float
    agreement: float
    accuracy: float
    reference_accuracy: float
    rows: int
    problems: list[str] = field(default_factory=list)
    table: str = ""


    def summary(self) -> str:
        verdict = "ok" if self.ok else "FAILED: " + "; ".join(self.problems)
        return (f"{self.name} [{self.precision}] rows={self.rows} max|diff|={self.max_abs_diff:.3g} "
                f"agreement={100 * self.agreement:.2f}% accuracy={100 * self.accuracy:.2f}% "
                f"(reference {100 * self.reference_accuracy:.2f}%): {verdict}")


def _diff_table(reference: np.ndarray, logits: np.ndarray, labels: np.ndarray, atol: float, fp32: bool) -> str:
    diff = np.abs(reference - logits).max(axis=-1)
    flip = reference.argmax(-1) != logits.argmax(-1)
    bad = flip | (diff > atol) if fp32 else flip
    idx = np.flatnonzero(bad)
    if idx.size == 0:
        return ""
    idx = idx[np.argsort(-diff[idx], kind="stable")][:MAX_TABLE_ROWS]
    lines = [f"{'row':>5} {'label':>5} {'ref':>4} {'file':>4} {'max|diff|':>10}  reference logits -> file logits"]
    for i in idx:
        ref = " ".join(f"{v:+.5f}" for v in reference[i])
        got = " ".join(f"{v:+.5f}" for v in logits[i])
        lines.append(f"{i:>5} {labels[i]:>5} {reference[i].argmax():>4} {logits[i].argmax():>4} {diff[i]:>10.3g}  {ref} -> {got}")
    more = int(bad.sum()) - len(idx)
    if more > 0:
        lines.append(f"... and {more} more differing rows")
    return "\n".join(lines)


def check(
    name: str,
    reference: np.ndarray,
    logits: np.ndarray,
    labels: Sequence[int],
    *,
    precision: str,
    atol: float = 1e-4,
    min_agreement: float = 0.99,
) -> ParityResult:
    """Compare a file's logits with the reference fp32 logits on the same rows.

    fp32: max |diff| <= atol and identical argmax on every row. Other precisions: argmax
    agreement >= min_agreement (the budget's, albert_edge.budget). Accuracy against the
    teacher is the budget's verdict, not parity's.
    """
    reference = np.asarray(reference, dtype=np.float32)
    logits = np.asarray(logits, dtype=np.float32)
    y = np.asarray(labels)
    if reference.shape != logits.shape:
        return ParityResult(name, precision, False, float("inf"), 0.0, 0.0, 0.0, len(y),
                            [f"logits shape {logits.shape} differs from the reference {reference.shape}"])
    fp32 = precision in FP32_PRECISIONS
    max_diff = float(np.abs(reference - logits).max()) if reference.size else 0.0
    agreement = float((reference.argmax(-1) == logits.argmax(-1)).mean())
    accuracy = float((logits.argmax(-1) == y).mean())
    ref_acc = float((reference.argmax(-1) == y).mean())
    problems: list[str] = []
    if not np.isfinite(logits).all():
        problems.append("non-finite logits")
    if fp32:
        if not max_diff <= atol:
            problems.append(f"max |logit diff| {max_diff:.3g} > atol {atol:g}")
        if agreement < 1.0:
            problems.append(f"argmax differs on {int(round((1 - agreement) * len(y)))} of {len(y)} rows")
    else:
        if agreement < min_agreement:
            problems.append(f"argmax agreement {100 * agreement:.2f}% < {100 * min_agreement:.2f}%")
    table = _diff_table(reference, logits, y, atol, fp32)
    return ParityResult(name, precision, not problems, max_diff, agreement, accuracy, ref_acc, len(y), problems, table)
