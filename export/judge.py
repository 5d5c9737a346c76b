"""Judging model files against the accuracy budget (albert_edge.budget), the one way the
quantize and bundle stages both do it: a file's logits on the held-out validation rows through
edge_runtime (export.parity.file_logits), its accuracy there against the teacher's on the same
rows, and its argmax agreement with the fp32 model it was made from. A file that is kept is then
measured once on the eval split, for the report (choices are never made there), and a stage
sums its files up (`files_summary`).

Parity (export.parity) asks whether a file reproduces the model; this module asks whether it
may ship. Both run files the way devices and benchmarks do.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.budget import Budget, Verdict, judge, stage_verdict
from albert_edge.data import Encoded
from albert_edge.variant import ModelVariant
from export import parity  # called through the module, so a test can stand in for file_logits


@dataclass
class FileJudge:
    """What a file is judged on: the validation rows, the fp32 model's logits on them, the
    teacher's accuracy on them (the budget's reference) and the budget; plus how files are run
    (threads, pad id, batch size: a dynamic-int8 file's logits depend on the batch around a row)."""

    enc: Encoded
    fp32_logits: np.ndarray
    reference: float
    budget: Budget
    threads: int = 1
    pad_id: int = 0
    batch_size: int = 32
    labels: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.enc.labels)

    @property
    def rows(self) -> int:
        return len(self.labels)

    @property
    def fp32_accuracy(self) -> float:
        return float((self.fp32_logits.argmax(-1) == self.labels).mean())

    def logits(self, path: Path, enc: Encoded | None = None, buckets: Sequence[int] | None = None) -> np.ndarray:
        """A file's logits on `enc` (default: the validation rows), through edge_runtime."""
        return parity.file_logits(path, self.enc if enc is None else enc, threads=self.threads, pad_id=self.pad_id,
                           batch_size=self.batch_size, buckets=buckets)

    def verdict(self, name: str, logits: np.ndarray) -> Verdict:
        """The budget's verdict on a file whose validation-row logits are `logits`."""
        acc = float((logits.argmax(-1) == self.labels).mean())
        agreement = float((logits.argmax(-1) == self.fp32_logits.argmax(-1)).mean())
        return judge(name, self.budget, accuracy=acc, reference=self.reference, agreement=agreement, rows=self.rows)

    def judge_file(self, name: str, path: Path, buckets: Sequence[int] | None = None) -> Verdict:
        return self.verdict(name, self.logits(path, buckets=buckets))

    def truncated(self, width: int, model: Any) -> FileJudge:
        """This judge on the rows cut to `width` tokens (a bucketed file's largest bucket, which
        truncates longer input as a device does); the fp32 reference is the model's logits on
        the cut rows when any row was cut."""
        clipped = max(self.enc.lengths()) > width
        enc = parity.clip_encoded(self.enc, width)
        fp32 = parity.torch_logits(model, enc, pad_id=self.pad_id) if clipped else self.fp32_logits
        return dataclasses.replace(self, enc=enc, fp32_logits=fp32)


@dataclass
class ReportRows:
    """The eval split a kept file is reported on, with what its numbers are read against:
    the task's label count and the teacher's predictions there (None: no agreement column)."""

    enc: Encoded
    num_labels: int
    teacher_preds: list[int] | None = None

    def truncated(self, width: int) -> ReportRows:
        return dataclasses.replace(self, enc=parity.clip_encoded(self.enc, width))


def score_file(
    judge_: FileJudge,
    report: ReportRows,
    name: str,
    path: Path,
    val_logits: np.ndarray,
    buckets: Sequence[int] | None = None,
    log: logging.Logger | None = None,
) -> tuple[dict[str, Any], Verdict]:
    """A finished file's verdict on the validation rows (from its logits there, `val_logits`)
    and its eval-split numbers (measured once), as the manifest's variant fields."""
    from albert_edge.metrics import classification_metrics

    verdict = judge_.verdict(name, val_logits)
    logits = judge_.logits(path, enc=report.enc, buckets=buckets)
    m = classification_metrics(list(report.enc.labels), logits.argmax(-1).tolist(), report.num_labels, report.teacher_preds)
    out = {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "teacher_agreement": m.get("agreement"), "confusion": m["confusion"],
           "val_accuracy": verdict.accuracy, "agreement": verdict.agreement, "parity_rows": verdict.rows, "parity_split": "validation",
           "logit_max_abs_diff": float(np.abs(judge_.fp32_logits - val_logits).max()), "verdict": verdict.as_dict()}
    log = log or logging.getLogger("albert_edge")
    level = "info" if verdict.passed else "warning"
    getattr(log, level)("  %s: validation %.2f%% (teacher %.2f%%), fp32 agreement %.2f%%: %s; eval %.2f%%", name,
                        100 * verdict.accuracy, 100 * judge_.reference, 100 * (verdict.agreement or 0),
                        "within budget" if verdict.passed else "; ".join(verdict.reasons), 100 * m["accuracy"])
    return out, verdict


class FileGate:
    """Judges every file of a bundle the same way, as an app runs it: batch 1 at the real length
    (through the file's buckets), on the validation rows cut to the file's largest bucket, against
    the fp32 model's logits on the same cut rows (one FileJudge per width, made when first needed)."""

    def __init__(self, model: Any, enc: Encoded, reference: float | None, budget: Budget, *, threads: int = 1, pad_id: int = 0):
        if reference is None:  # no teacher accuracy on record: the model's own is the reference
            reference = float((parity.torch_logits(model, enc, pad_id=pad_id).argmax(-1) == np.asarray(enc.labels)).mean())
        self.model, self.enc, self.budget, self.threads, self.pad_id = model, enc, budget, threads, pad_id
        self.reference = float(reference)
        self.rows = len(enc)
        self._judges: dict[int, FileJudge] = {}  # by truncation width (0: none)

    def judge(self, name: str, path: Path, buckets: Sequence[int]) -> Verdict:
        width = max(buckets) if buckets else 0
        if width not in self._judges:
            enc = parity.clip_encoded(self.enc, width) if width else self.enc
            self._judges[width] = FileJudge(enc, parity.torch_logits(self.model, enc, pad_id=self.pad_id), self.reference, self.budget,
                                            threads=self.threads, pad_id=self.pad_id, batch_size=1)
        return self._judges[width].judge_file(name, path, buckets=list(buckets) or None)


def files_summary(variants: Sequence[ModelVariant], primary: ModelVariant, fp32_val_accuracy: float, budget: Budget) -> dict[str, Any]:
    """A stage's summary metrics over the judged files it made: the `primary` file's numbers
    (eval accuracy, validation accuracy, agreement with the teacher, else with fp32; size and
    MatMul audit), every file's accuracy and verdict, and the stage verdict over them."""
    mm = primary.details.get("matmuls", {})
    teacher_agreement = primary.details.get("teacher_agreement")
    return {
        "accuracy": primary.accuracy,
        "val_accuracy": primary.val_accuracy,
        "primary": primary.name,
        "macro_f1": primary.details.get("macro_f1"),
        "agreement": teacher_agreement if teacher_agreement is not None else primary.agreement,
        "fp32_agreement": primary.agreement,
        "fp32_val_accuracy": fp32_val_accuracy,
        "size_bytes": primary.size_bytes,
        "size_mb": round((primary.size_bytes or 0) / 1e6, 3),
        "size_ratio": primary.details.get("size_ratio"),
        "matmuls_int8": mm.get("weight_matmuls_int8"),
        "matmuls_total": mm.get("weight_matmuls"),
        "float_nodes": len(primary.details.get("float_nodes", [])),
        "variants": {
            v.name: {"accuracy": v.accuracy, "val_accuracy": v.val_accuracy, "size_bytes": v.size_bytes, "passed": v.passed}
            for v in variants
        },
        "verdict": stage_verdict([v.to_dict() for v in variants], budget),
    }
