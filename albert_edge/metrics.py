"""Classification metrics shared by every stage that reports accuracy."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

PREDICTIONS_FILE = "predictions.json"


def classification_metrics(
    labels: Sequence[int], preds: Sequence[int], num_labels: int = 2, teacher_preds: Sequence[int] | None = None
) -> dict[str, Any]:
    """accuracy, macro-F1, confusion matrix (rows: true, cols: predicted), teacher agreement."""
    y = np.asarray(labels)
    p = np.asarray(preds)
    conf = np.zeros((num_labels, num_labels), dtype=int)
    np.add.at(conf, (y, p), 1)
    f1s = []
    for c in range(num_labels):
        tp = conf[c, c]
        fp = conf[:, c].sum() - tp
        fn = conf[c, :].sum() - tp
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    out: dict[str, Any] = {
        "accuracy": float((y == p).mean()),
        "macro_f1": float(np.mean(f1s)),
        "confusion": conf.tolist(),
        "n": int(len(y)),
    }
    if teacher_preds is not None and len(teacher_preds) == len(p):
        out["agreement"] = float((np.asarray(teacher_preds) == p).mean())
    return out


def save_predictions(out_dir: Path, logits: np.ndarray) -> None:
    """Per-example eval predictions so later stages can report agreement with this model."""
    data = {"preds": logits.argmax(-1).tolist(), "logits": np.round(logits, 6).tolist()}
    (out_dir / PREDICTIONS_FILE).write_text(json.dumps(data))


def load_predictions(artifact_dir: Path | None) -> list[int] | None:
    if artifact_dir is None:
        return None
    p = artifact_dir / PREDICTIONS_FILE
    return json.loads(p.read_text())["preds"] if p.is_file() else None
