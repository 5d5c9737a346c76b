"""TFLite int8 files (dynamic-range and static) made from the TFLite writer's fp32 file, with
the every-weight-matmul-is-int8 audit a file must pass before it counts, judged (export.judge)
and recorded as the quantize stage lists them (`tflite_int8_variants`), and the keep-float
fallback: when an int8 .tflite file misses the accuracy budget, rank
its weight matmuls by sensitivity and re-quantise with ai-edge-quantizer keeping the most
sensitive ones float, a group at a time, until the verdict passes or a cap is hit. The TFLite
twin of the ONNX fallback (compress.onnx_int8), whose ranking record and search it reuses.

What can be kept float: the weight matmuls (FULLY_CONNECTED / BATCH_MATMUL reading a constant),
one candidate per weight tensor, named as the audit names it (export.tflite_audit, `<OP>#<k>`),
so the file's float weight matmuls can be checked against the list. A weight is read by one
operator per use per bucket signature (and by every repeat of a shared ALBERT layer); all of
them are kept float together, as they share one buffer and the quantizer refuses a buffer
quantised for one reader and not another. ai-edge-quantizer matches recipe rules on operator
output tensor names, so each candidate carries those names (its scopes) as they are in
export.tflite_compact.unique_names_copy of the float file, the form the quantizer is fed.

Ranking: each weight alone int8 (everything else float), its logit MSE and argmax flips against
the fp32 file on a slice of calibration rows (train split), most flips first, then MSE: the
same measure and order as the ONNX fallback. The number kept float is chosen on the held-out
validation rows by the caller's verdict (accuracy against the teacher, agreement with fp32).
The embedding lookups, also int8 in int8-dynamic files, are not candidates: they are not
matmuls, so the audit does not cover them, and their rounding is exact table data, not a
kernel's arithmetic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.budget import Verdict
from albert_edge.data import Encoded
from albert_edge.variant import ModelVariant
from compress.onnx_int8 import KeepFloat, Sensitivity, keep_float_search
from export.judge import FileJudge, ReportRows, score_file
from export.tflite import TFLiteExportError, convert_tflite
from export.tflite_audit import WeightMatmul, matmul_report

INT8_PRECISIONS = ("int8-dynamic", "int8-static")


class TFLiteInt8Error(RuntimeError):
    """An int8 .tflite file could not be made as asked (the writer failed, or a weight matmul
    stayed float that no fallback asked for); the message names the file."""


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


def candidates(float_file: Path, work: Path) -> list[WeightMatmul]:
    """The float file's weight matmuls, with scopes as the quantizer will see them."""
    from export.tflite_audit import weight_matmuls
    from export.tflite_compact import unique_names_copy

    unique = unique_names_copy(Path(float_file), Path(work) / "float.unique.tflite")
    try:
        return [w for w in weight_matmuls(unique)[0] if not w.int8]
    finally:
        unique.unlink(missing_ok=True)


def parameter_names(model: Any, float_file: Path, weights: Sequence[WeightMatmul]) -> dict[str, str]:
    """{weight name: PyTorch parameter name} for weights stored exactly as a parameter of
    `model` (or its transpose), so a reader of the manifest sees `classifier.weight`."""
    from export.tflite_compact import _schema

    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(Path(float_file).read_bytes(), 0)
    params: dict[tuple[tuple[int, ...], bytes], str] = {}
    for name, p in model.named_parameters():
        arr = p.detach().float().cpu().numpy()
        if arr.ndim == 2:
            params.setdefault((arr.shape, np.ascontiguousarray(arr).tobytes()), name)
            params.setdefault((arr.T.shape, np.ascontiguousarray(arr.T).tobytes()), name)
    out = {}
    for w in weights:
        buf = m.buffers[w.buffer]
        if buf.data is None or w.dtype != "FLOAT32":
            continue
        key = (tuple(w.shape), np.asarray(buf.data, np.uint8).tobytes())
        if key in params:
            out[w.name] = params[key]
    return out


@dataclass
class Quantiser:
    """Re-quantises one float file at one precision with some weights kept float (or only some
    int8), compacting as the export does; int8-static calibrates once for all rebuilds."""

    float_file: Path
    precision: str
    feeds: dict[str, list[dict[str, np.ndarray]]] | None = None
    threads: int = 1
    granularity: str = "channel"
    stats: dict[str, Any] = field(default_factory=dict)

    def build(self, dst: Path, *, keep_float: Sequence[WeightMatmul] = (), only: Sequence[WeightMatmul] | None = None) -> Any:
        from export.tflite import quantize_tflite
        from export.tflite_compact import compact_tflite

        quantize_tflite(self.float_file, dst, self.precision, self.feeds, self.threads, self.granularity,  # type: ignore[arg-type]
                        keep_float=[s for w in keep_float for s in w.scopes],
                        only=None if only is None else [s for w in only for s in w.scopes], stats_cache=self.stats)
        return compact_tflite(dst)


def rank_sensitivity(
    quantiser: Quantiser,
    weights: Sequence[WeightMatmul],
    reference: np.ndarray,
    run_file: Callable[[Path], np.ndarray],
    work: Path,
    progress: Callable[..., Any] | None = None,
) -> list[Sensitivity]:
    """Quantise one weight at a time and measure logit MSE and argmax flips against the fp32
    file's logits (`run_file(path) -> logits` on the sensitivity rows). Most sensitive first."""
    out = []
    probe = Path(work) / "probe.tflite"
    for w in progress(weights, desc="sensitivity") if progress else weights:
        quantiser.build(probe, only=[w])
        logits = run_file(probe)
        flips = float(np.mean(logits.argmax(-1) != reference.argmax(-1)))
        out.append(Sensitivity(w.name, float(np.mean((logits - reference) ** 2)), flips))
    probe.unlink(missing_ok=True)
    return sorted(out, key=lambda s: (-s.flips, -s.mse))


@dataclass
class Repair:
    """What the fallback did, in the manifest's words (the ONNX fallback's keys).

    float_nodes: per weight kept float, its name as the audit lists it, why, its sensitivity
    rank and numbers. summary: the `fallback` entry (all-int8 verdict, steps, full ranking).
    verdict: the final file's. fields: the file's new size, hash and compaction figures.
    """

    met: bool
    float_nodes: list[dict[str, Any]]
    summary: dict[str, Any]
    verdict: Verdict
    fields: dict[str, Any]


def keep_float_fallback(
    float_file: Path,
    dst: Path,
    precision: str,
    *,
    first: Verdict,
    judge_file: Callable[[Path], Verdict],
    sensitivity_logits: Callable[[Path], np.ndarray],
    work: Path,
    group_size: int,
    max_float_nodes: int,
    feeds: dict[str, list[dict[str, np.ndarray]]] | None = None,
    threads: int = 1,
    granularity: str = "channel",
    model: Any = None,
    log: logging.Logger | None = None,
    progress: Callable[..., Any] | None = None,
) -> Repair:
    """Repair an int8 file (`dst`, made from `float_file`) whose verdict `first` missed.

    judge_file: the verdict of a file on the validation rows (chooses how many stay float).
    sensitivity_logits: a file's logits on the sensitivity rows (ranks the weights). The file
    left at `dst` is the last one built: the first that passed, or the one at the cap. Raises
    RuntimeError if a rebuilt file's float weight matmuls are not exactly the ones asked for.
    """
    from albert_edge.artifacts import sha256_file
    from export.tflite_audit import matmul_report

    if precision not in INT8_PRECISIONS:
        raise ValueError(f"the keep-float fallback repairs int8 files, not {precision}")
    log = log or logging.getLogger("albert_edge")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    weights = candidates(float_file, work)
    by_name = {w.name: w for w in weights}
    quantiser = Quantiser(Path(float_file), precision, feeds, threads, granularity)
    reference = sensitivity_logits(Path(float_file))
    log.info("  ranking %d weight matmuls by sensitivity on %d calibration rows", len(weights), len(reference))
    ranking = rank_sensitivity(quantiser, weights, reference, sensitivity_logits, work, progress)
    last: dict[str, Any] = {}

    def build(keep: list[str]) -> float:
        last["compaction"] = quantiser.build(dst, keep_float=[by_name[n] for n in keep])
        report = matmul_report(dst)
        if set(report.float_weight_nodes) != set(keep):
            raise RuntimeError(f"asked ai-edge-quantizer to keep {sorted(keep)} float, "
                               f"the file has {list(report.float_weight_nodes)} float")
        v = last["verdict"] = judge_file(dst)
        log.info("    %d float weight matmul(s): validation accuracy %.2f%%, fp32 agreement %.2f%%", len(keep), 100 * v.accuracy,
                 100 * (v.agreement or 0))
        return v.accuracy

    result = keep_float_search(ranking, build, lambda _acc: last["verdict"].passed, group_size=group_size, max_float_nodes=max_float_nodes)
    why = f"accuracy-aware fallback on {first.rows} validation rows: all-int8 " + "; ".join(first.reasons)
    params = parameter_names(model, Path(float_file), weights) if model is not None else {}
    rank = {s.node: (i + 1, s) for i, s in enumerate(ranking)}
    float_nodes = []
    for n in result.float_nodes:
        i, s = rank[n]
        w = by_name[n]
        float_nodes.append({"node": n, "reason": why, "sensitivity_rank": i, "logit_mse": s.mse, "argmax_flips": s.flips,
                            "op": w.op, "weight": params.get(n), "shape": list(w.shape), "operators": len(w.scopes)})
    summary = {"met_budget": result.met, "all_int8": first.as_dict(), "chosen_on": "validation",
               "ranked_on": f"{len(reference)} calibration rows",
               "steps": [{"float_nodes": len(s.float_nodes), "val_accuracy": s.accuracy} for s in result.steps],
               "ranking": [{"node": s.node, "weight": params.get(s.node), "logit_mse": s.mse, "argmax_flips": s.flips} for s in ranking]}
    if not result.met:
        log.warning("  fallback ran out of options (%d float weight matmuls) at %.2f%%", len(result.float_nodes), 100 * result.accuracy)
    if not result.steps:  # no weight matmul to keep float (or a cap of 0): the file is as it was
        return Repair(False, [], summary, first, {})
    fields = {"size_bytes": dst.stat().st_size, "sha256": sha256_file(dst), "compaction": last["compaction"].as_dict()}
    return Repair(result.met, float_nodes, summary, last["verdict"], fields)


def tflite_int8_variants(
    model: Any,
    precisions: Sequence[str],
    out_dir: Path,
    judge: FileJudge,
    report: ReportRows,
    *,
    buckets: tuple[int, ...],
    float_file: Path | None,
    float_bytes: int | None,
    calib: Encoded,
    keep_float: KeepFloat,
    log: logging.Logger | None = None,
    progress: Callable[..., Any] | None = None,
) -> list[ModelVariant]:
    """One int8 .tflite file `model.<precision>.tflite` per precision in `out_dir` (from the fp32
    `float_file` with its `buckets` when there is one), audited, repaired by the keep-float
    fallback when its verdict misses, judged on the validation rows cut to the largest bucket
    (as a device cuts them; smallest-bucket rule) and reported on the eval split.
    TFLiteInt8Error when the writer fails or a weight matmul stays float that no fallback asked for."""
    from export.tflite_audit import unexpected_float

    log = log or logging.getLogger("albert_edge")
    view = judge.truncated(buckets[-1], model)
    report = report.truncated(buckets[-1])
    out = []
    for precision in precisions:
        name = f"tflite-{precision}"
        path = out_dir / f"model.{precision}.tflite"
        try:
            fields, audit = tflite_int8_file(model, path, precision, buckets=buckets, float_file=float_file, calibration=calib,
                                             pad_id=view.pad_id, threads=view.threads)
        except TFLiteExportError as err:
            raise TFLiteInt8Error(f"{name}: {err}") from None
        logits = view.logits(path, buckets=buckets)
        first = view.verdict(name, logits)
        repair = None
        if not first.passed and keep_float.enabled and precision in INT8_PRECISIONS:
            log.info("  %s: %s; keeping the most sensitive weight matmuls float", name, "; ".join(first.reasons))
            work = out_dir / "_work" / f"fallback.{precision}"
            repair = _repair(model, view, name, precision, path, first, float_file, buckets, calib, work, keep_float, log=log,
                             progress=progress)
            fields.update(repair.fields)
            logits = view.logits(path, buckets=buckets)
            audit = matmul_report(path)
        float_nodes = repair.float_nodes if repair is not None else []
        stray = unexpected_float(path, {f["node"] for f in float_nodes})
        if stray:
            raise TFLiteInt8Error(f"{name}: {len(stray)} of {audit.weight_total} weight matmuls stayed float that no fallback "
                                    f"asked for ({', '.join(stray[:3])})")
        scores, _ = score_file(view, report, name, path, logits, buckets=buckets, log=log)
        variant = ModelVariant.from_dict({"name": name, **fields, "file": path.name, **scores, "max_abs_diff": None,
                                          "matmuls": audit.as_dict(), "from_float_file": bool(float_file),
                                          "bucket_rule": "smallest bucket >= real length", "float_nodes": float_nodes,
                                          **({"fallback": repair.summary} if repair is not None else {})})
        if float_bytes:
            variant = variant.with_fields(size_ratio=round(fields["size_bytes"] / float_bytes, 4))
        log.info("  %s: %.2f MB, %d/%d weight matmuls int8", name, fields["size_bytes"] / 1e6, audit.weight_int8, audit.weight_total)
        out.append(variant)
    return out


def _repair(model: Any, view: FileJudge, name: str, precision: str, path: Path, first: Verdict, float_file: Path | None,
            buckets: tuple[int, ...], calib: Encoded, work: Path, keep_float: KeepFloat, *, log: logging.Logger,
            progress: Callable[..., Any] | None) -> Repair:
    """The keep-float fallback for the int8 file at `path` whose verdict `first` missed: weights
    ranked on the first `keep_float.sensitivity_rows` calibration rows, the count chosen on the validation rows."""
    from export.parity import clip_encoded
    from export.tflite import calibration_feeds

    work.mkdir(parents=True, exist_ok=True)
    if float_file is None:
        float_file = work / "model.fp32.tflite"
        convert_tflite(model, float_file, seq_lens=buckets, precision="fp32")
    sens = clip_encoded(calib.subset(list(range(min(keep_float.sensitivity_rows, len(calib))))), buckets[-1])
    feeds = calibration_feeds(calib, buckets, view.pad_id) if precision == "int8-static" else None
    return keep_float_fallback(float_file, path, precision, first=first,
                               judge_file=lambda p: view.verdict(name, view.logits(p, buckets=buckets)),
                               sensitivity_logits=lambda p: view.logits(p, enc=sens, buckets=buckets), work=work,
                               group_size=keep_float.group_size, max_float_nodes=keep_float.max_float_nodes, feeds=feeds,
                               threads=view.threads, model=model, log=log, progress=progress)
