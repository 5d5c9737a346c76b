"""Does a model file give the same answers on the device as on this host?

Why: int8 answers depend on the kernel path a runtime picks on each CPU, so an accuracy measured
on x86 says nothing certain about an ARM phone. On a device other than this machine, every file
predicts a fixed, seeded sample of eval rows (real lengths, batch 1) there and here, through the
same runtime; the row records accuracy, macro-F1, argmax agreement with the host, the largest
logit difference, per-row predictions, and the rows where the two disagree.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.metrics import classification_metrics
from benchmarks.devices.base import run_command

EMULATED_SAMPLE_ROWS = 200  # emulation runs a row in about half a second
MAX_LISTED_DISAGREEMENTS = 100
# The host reference when the device's runtime is not installed here: tflite-runtime needs numpy < 2,
# so the host compares with LiteRT running the very same file (the row says which ran).
HOST_FALLBACK = {"tflite-runtime": ("litert",)}


def sample_size(requested: int | None, emulated: bool, total: int) -> int:
    """Rows to predict: `requested` (0: every row); None: EMULATED_SAMPLE_ROWS under emulation, else all."""
    if requested is None:
        requested = EMULATED_SAMPLE_ROWS if emulated else 0
    return total if requested <= 0 else min(requested, total)


def sample_inputs(inputs: Path, rows: int, seed: int, dest: Path) -> Path:
    """A seeded sample of the eval rows (order kept, `row_index` = their eval positions); the
    inputs themselves when every row is asked for."""
    data = dict(np.load(inputs))
    total = int(data["input_ids"].shape[0])
    if rows >= total:
        return inputs
    idx = np.sort(np.random.default_rng(seed).choice(total, size=rows, replace=False))
    out = {k: (v[idx] if v.ndim and v.shape[0] == total else v) for k, v in data.items()}
    out["row_index"] = idx.astype(np.int64)
    np.savez(dest, **out)
    return dest


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def host_reference(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run one measure.py child on this host (accuracy only) and parse its JSON line."""
    from benchmarks.harness import parse_child_output

    rc, out, err = run_command([sys.executable, *argv], timeout)
    return parse_child_output(rc, out, err, timeout)


def pred_string(preds: list[int] | None) -> str | None:
    """Per-row predictions as digits in sample order (labels are single digits)."""
    if preds is None or any(not 0 <= p <= 9 for p in preds):
        return None
    return "".join(str(p) for p in preds)


def device_metrics(preds: list[int] | None, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """macro-F1, the sample, and the per-row predictions of one device run."""
    labels = data.get("labels")
    out: dict[str, Any] = {"eval_rows": None if preds is None else len(preds), "preds_real": pred_string(preds)}
    if "row_index" in data:
        out["sample_rows"] = [int(i) for i in data["row_index"]]
    if preds is not None and labels is not None and len(labels) == len(preds):
        n = max(int(np.max(labels)) + 1, int(max(preds, default=0)) + 1, 2)
        out["macro_f1"] = classification_metrics(labels.tolist(), preds, num_labels=n)["macro_f1"]
    return out


def compare_with_host(child: dict[str, Any], host: dict[str, Any] | None, data: dict[str, np.ndarray]) -> dict[str, Any]:
    """Agreement of a device run with the host's run of the same file on the same rows."""
    if host is None:
        return {}
    if not host.get("ok") or host.get("preds_real") is None:
        return {"host_error": str(host.get("error") or "the host run gave no predictions")[:300]}
    dev_p, host_p = child.get("preds_real"), host["preds_real"]
    if dev_p is None or len(dev_p) != len(host_p):
        return {"host_error": "device and host predicted different rows"}
    labels = data.get("labels")
    index = data.get("row_index")
    dev_l = np.asarray(child.get("logits_real") or [], dtype=np.float64)
    host_l = np.asarray(host.get("logits_real") or [], dtype=np.float64)
    per_row = np.abs(dev_l - host_l).max(axis=1) if dev_l.shape == host_l.shape and dev_l.size else None
    differ = [i for i, (a, b) in enumerate(zip(dev_p, host_p)) if a != b]
    out: dict[str, Any] = {
        "host_agreement": 1.0 - len(differ) / len(dev_p) if dev_p else None,
        "host_accuracy": float((np.asarray(host_p) == labels).mean()) if labels is not None and len(labels) == len(host_p) else None,
        "host_max_abs_diff": float(per_row.max()) if per_row is not None else None,
        "host_runtime": host.get("runtime"), "host_runtime_version": host.get("runtime_version"),
        "host_disagreements": len(differ),
        "disagreements": [
            {"row": int(index[i]) if index is not None else i, "label": int(labels[i]) if labels is not None else None,
             "host": int(host_p[i]), "device": int(dev_p[i]), "max_abs_diff": None if per_row is None else round(float(per_row[i]), 6)}
            for i in differ[:MAX_LISTED_DISAGREEMENTS]
        ],
    }
    return out
