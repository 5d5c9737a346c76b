"""The accuracy budget and every reading of it.

One place decides whether a model or a model file may ship: the runner's gate, the quantize
fallback and its verdict over files, INC's tolerance, export parity and the bundle all ask
here, against one baseline (the teacher) on one set of rows (the held-out validation rows
carved from train).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from albert_edge.schema import require

OnMiss = Literal["fail", "drop"]


@dataclass(frozen=True)
class Budget:
    """What a stage or a shipped file may lose.

    max_accuracy_drop: points of validation accuracy below the teacher's (None: no limit).
    min_agreement: argmax agreement a reduced-precision file must keep with its fp32 twin.
    on_miss: `fail` stops the stage; `drop` leaves the file out of the bundle with the reason.
    """

    max_accuracy_drop: float | None = None
    min_agreement: float = 0.99
    on_miss: OnMiss = "fail"

    def check(self) -> None:
        if self.max_accuracy_drop is not None:
            require(
                0 <= self.max_accuracy_drop <= 100,
                "max_accuracy_drop",
                f"{self.max_accuracy_drop} is not a number of points between 0 and 100",
                "use 1.0 for 'at most one accuracy point lost'",
            )
        require(0.0 <= self.min_agreement <= 1.0, "min_agreement", f"{self.min_agreement} should be in [0, 1]", "0.99 = 99 %")
        require(self.on_miss in ("fail", "drop"), "on_miss", f"{self.on_miss!r}", "fail or drop")


def drop_points(reference: float, accuracy: float) -> float:
    """Accuracy lost against `reference`, in percentage points (negative: a gain)."""
    return 100.0 * (reference - accuracy)


def within(budget: Budget, reference: float, accuracy: float) -> bool:
    """True when `accuracy` is inside the budget against `reference` (the teacher)."""
    return budget.max_accuracy_drop is None or drop_points(reference, accuracy) <= budget.max_accuracy_drop + 1e-9


def inc_tolerance(budget: Budget, fp32_accuracy: float, teacher_accuracy: float) -> float:
    """INC's relative tolerance (loss against the fp32 model it tunes) that matches the
    absolute budget against the teacher: fp32 * (1 - tol) = teacher - budget."""
    points = 100.0 if budget.max_accuracy_drop is None else budget.max_accuracy_drop
    if fp32_accuracy <= 0:
        return 1.0
    return max(0.0, 1.0 - (teacher_accuracy - points / 100.0) / fp32_accuracy)


@dataclass(frozen=True)
class Verdict:
    """Whether one model or file may ship, and why not."""

    name: str
    passed: bool
    accuracy: float
    reference: float
    drop_points: float
    agreement: float | None
    rows: int
    split: str
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        return out

    def message(self) -> str:
        return f"{self.name}: " + "; ".join(self.reasons) if self.reasons else f"{self.name}: within budget"


def judge(
    name: str,
    budget: Budget,
    *,
    accuracy: float,
    reference: float,
    agreement: float | None = None,
    rows: int = 0,
    split: str = "validation",
) -> Verdict:
    """The verdict for one model or file: accuracy within the budget against the teacher's on
    the same rows and, for a reduced-precision file, argmax agreement with its fp32 twin."""
    reasons = []
    drop = drop_points(reference, accuracy)
    if not within(budget, reference, accuracy):
        reasons.append(f"{split} accuracy {100 * accuracy:.2f}% is {drop:.2f} points below the teacher's "
                       f"{100 * reference:.2f}% (budget {budget.max_accuracy_drop:g})")
    if agreement is not None and agreement + 1e-12 < budget.min_agreement:
        reasons.append(f"argmax agreement with the fp32 model {100 * agreement:.2f}% is below "
                       f"{100 * budget.min_agreement:.2f}% on {rows} {split} rows")
    return Verdict(name, not reasons, accuracy, reference, round(drop, 4), agreement, rows, split, tuple(reasons))


def stage_verdict(variants: list[dict[str, Any]], budget: Budget) -> dict[str, Any]:
    """A stage's verdict over the files it made (their `verdict` records): every file passes, or
    (on_miss: drop) at least one does and the misses are left for the bundle to drop with their reasons."""
    misses = [v for v in variants if not v["verdict"]["passed"]]
    reasons = [f"{v['name']}: {'; '.join(v['verdict']['reasons'])}" for v in misses]
    passed = not misses or (budget.on_miss == "drop" and len(misses) < len(variants))
    return {"passed": passed, "reasons": reasons, "files": len(variants), "missed": [v["name"] for v in misses], "on_miss": budget.on_miss}
