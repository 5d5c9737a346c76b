"""TFLite int8 files (dynamic-range and static) made from the TFLite writer's fp32 file, with
the every-weight-matmul-is-int8 audit a file must pass before it counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from albert_edge.data import Encoded
from export.tflite import TFLiteExportError, convert_tflite
from export.tflite_audit import matmul_report


def tflite_int8_file(model: Any, path: Path, precision: str, *, buckets: tuple[int, ...], float_file: Path | None,
                     calibration: Encoded | None, pad_id: int, threads: int) -> tuple[dict[str, Any], Any]:
    """Write `model` as an int8 .tflite file (one signature per bucket; from `float_file` when
    given) and audit it: (the writer's fields, the MatMul report). TFLiteExportError when the
    writer fails or a weight matmul stays float."""
    fields = convert_tflite(model, path, seq_lens=buckets, precision=precision, float_file=float_file,  # type: ignore[arg-type]
                            calibration=calibration if precision == "int8-static" else None, pad_id=pad_id, threads=threads)
    report = matmul_report(path)
    if report.float_weight_nodes:
        raise TFLiteExportError(f"{len(report.float_weight_nodes)} of {report.weight_total} weight matmuls stayed float "
                                f"({', '.join(report.float_weight_nodes[:3])})")
    return fields, report
