"""ONNX Runtime int8: dynamic (s8 weights, activations quantised at run time) and static QDQ
(u8 activations from calibration, s8 weights), plus the per-node sensitivity ranking and the
keep-float fallback, and `onnx_int8_variants`: the int8 files made, repaired, audited and judged
(export.judge) as the quantize stage records them.

u8 activations, not s8: s8s8 QDQ MatMuls were seen about 2x slower on x86 CPUs without VNNI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from albert_edge.budget import Verdict
from albert_edge.data import Encoded, batch_indices, pad_batch
from albert_edge.variant import ModelVariant
from compress.onnx_graph import matmul_report
from export.judge import FileJudge, ReportRows, score_file

Scheme = Literal["dynamic", "static"]  # ORT's: activations quantised at run time, or from calibration
# The files the quantize stage makes. dynamic-attention: dynamic int8 with the attention's
# activation MatMuls (Q.K^T, P.V) int8 too, both inputs quantised at run time; this is what
# Optimum's ORTQuantizer makes (static QDQ always quantises them).
OnnxMode = Literal["dynamic", "dynamic-attention", "static"]
CalibMethod = Literal["minmax", "entropy", "percentile"]
# Op types we quantise: the weight products and the embedding lookups. LayerNorm, Softmax and
# elementwise ops stay float (int8 there costs accuracy and saves no weight bytes).
OP_TYPES = ("MatMul", "Gemm", "Gather")
FILE_TAG = {"dynamic": "int8-dynamic", "dynamic-attention": "int8-dynamic-attention", "static": "int8-static"}


def encoded_batches(enc: Encoded, batch_size: int, pad_id: int = 0, pad_to: int | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Length-bucketed int64 feeds (no labels) in a fixed order; `pad_to` fixes the width."""
    for idx in batch_indices(enc.lengths(), batch_size, shuffle=False):
        b = pad_batch(enc, idx, pad_id, pad_to=pad_to)
        yield {k: b[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def calibration_reader(enc: Encoded, batch_size: int = 32, pad_id: int = 0, fixed_shape: bool = False) -> Any:
    """An onnxruntime CalibrationDataReader over `enc` (rewindable, as INC needs).

    fixed_shape: one row per batch, all padded to the longest row. ORT's histogram
    calibrators (entropy, percentile) stack every batch's tensors into one array, so
    length-bucketed batches of different shapes fail there; they also keep every
    intermediate tensor in memory, so give them tens of rows, not thousands.
    """
    from onnxruntime.quantization import CalibrationDataReader

    size, width = (1, max(enc.lengths())) if fixed_shape else (batch_size, None)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it: Iterator[dict[str, np.ndarray]] = iter(())
            self.rewind()

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

        def rewind(self) -> None:
            self._it = encoded_batches(enc, size, pad_id, width)

    return Reader()


@dataclass(frozen=True)
class QuantSpec:
    """How to quantise one ONNX file (everything but the file names and the calibration data)."""

    mode: OnnxMode = "dynamic"
    method: CalibMethod = "minmax"
    per_channel: bool = False
    percentile: float = 99.999

    @property
    def scheme(self) -> Scheme:
        return "static" if self.mode == "static" else "dynamic"

    @property
    def quantizes_attention(self) -> bool:
        """Whether the attention's activation MatMuls become int8 (static QDQ always does)."""
        return self.mode != "dynamic"

    @property
    def file_tag(self) -> str:
        """The file's and variant's name part."""
        return FILE_TAG[self.mode]


def quantize_onnx(
    src: Path,
    dst: Path,
    spec: QuantSpec,
    *,
    calib: Encoded | None = None,
    exclude: Sequence[str] = (),
    only: Sequence[str] | None = None,
    pad_id: int = 0,
    cache: Path | None = None,
) -> Path:
    """Quantise a pre-optimised fp32 graph (see onnx_graph.preoptimize) to `dst`.

    exclude: node names kept float (fallback). only: quantise just these nodes (sensitivity
    probes). Static mode needs `calib` (task examples for the activation ranges); `cache`
    keeps those ranges in a file so the fallback's many rebuilds calibrate once.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    if spec.scheme == "dynamic":
        # ORT's dynamic quantizer first rewrites every Gemm `g` into `g_MatMul` + `g_Add`, so a
        # Gemm (pooler, classifier) named by its graph name would be neither kept float nor probed.
        exclude = _with_gemm_aliases(exclude)
        only = _with_gemm_aliases(only) if only is not None else None
    common: dict[str, Any] = dict(op_types_to_quantize=list(OP_TYPES), per_channel=spec.per_channel,
                                  nodes_to_exclude=list(exclude), nodes_to_quantize=list(only) if only is not None else None)
    if spec.scheme == "dynamic":
        # MatMulConstBOnly: leave MatMuls of two activations (the attention's) float unless asked.
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, extra_options={"MatMulConstBOnly": not spec.quantizes_attention},
                         **common)
        _restore_gemm_names(dst, exclude)
        return dst
    if (calib is None or len(calib) == 0) and not (cache and cache.is_file()):
        raise ValueError("static int8 needs calibration examples")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}[
        spec.method
    ]
    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "CalibPercentile": spec.percentile}
    reader = calibration_reader(calib, pad_id=pad_id, fixed_shape=spec.method != "minmax") if calib is not None else None
    quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=method, extra_options=extra,
                    calibration_cache_path=str(cache) if cache else None, **common)
    return dst


def _with_gemm_aliases(names: Sequence[str]) -> list[str]:
    """`names` plus the `<name>_MatMul` each Gemm becomes inside ORT's dynamic quantizer."""
    return [*names, *(f"{n}_MatMul" for n in names if not n.endswith("_MatMul"))]


def _restore_gemm_names(path: Path, exclude: Sequence[str]) -> None:
    """Give a Gemm kept float its graph name back (ORT left it as `<name>_MatMul`), so the
    file's float MatMuls carry the names the fallback chose and reported."""
    import onnx

    wanted = {f"{n}_MatMul": n for n in exclude if not n.endswith("_MatMul")}
    if not wanted:
        return
    model = onnx.load(str(path))
    taken = {node.name for node in model.graph.node}
    renamed = False
    for node in model.graph.node:
        if node.op_type == "MatMul" and node.name in wanted and wanted[node.name] not in taken:
            node.name = wanted[node.name]
            renamed = True
    if renamed:
        onnx.save(model, str(path))


def quantizable_nodes(path: Path, spec: QuantSpec) -> list[str]:
    """Nodes the quantizer turns int8 with OP_TYPES, the fallback candidates: weight
    MatMul/Gemm, embedding Gathers (table is an initializer) and the attention's activation
    MatMuls when they are quantised too (`QuantSpec.quantizes_attention`)."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    weight_mm = set(matmul_report(model).float_weight_nodes)
    out = []
    for node in model.graph.node:
        if node.name in weight_mm or (node.op_type == "Gather" and node.input[0] in inits):
            out.append(node.name)
        elif spec.quantizes_attention and node.op_type == "MatMul":
            out.append(node.name)
    return out


@dataclass
class Sensitivity:
    """Logit error each node causes when it alone is int8, on a calibration slice."""

    node: str
    mse: float
    flips: float  # share of rows whose argmax changes


def rank_sensitivity(
    src: Path,
    work: Path,
    spec: QuantSpec,
    nodes: Sequence[str],
    reference: np.ndarray,
    run_file: Callable[[Path], np.ndarray],
    *,
    calib: Encoded | None = None,
    pad_id: int = 0,
    cache: Path | None = None,
    progress: Callable[..., Any] | None = None,
) -> list[Sensitivity]:
    """Quantise one node at a time and measure its logit MSE against the fp32 reference
    (`run_file(path) -> logits` on the slice). Most sensitive first."""
    out = []
    probe = work / "probe.onnx"
    it = progress(nodes, desc="sensitivity") if progress else nodes
    for name in it:
        quantize_onnx(src, probe, spec, calib=calib, only=[name], pad_id=pad_id, cache=cache)
        logits = run_file(probe)
        out.append(Sensitivity(name, float(np.mean((logits - reference) ** 2)), float(np.mean(logits.argmax(-1) != reference.argmax(-1)))))
    probe.unlink(missing_ok=True)
    return sorted(out, key=lambda s: (-s.flips, -s.mse))


@dataclass
class FallbackStep:
    float_nodes: list[str]
    accuracy: float


@dataclass
class FallbackResult:
    """What the keep-float search did: steps tried, the nodes kept float, and whether it met the budget."""

    met: bool
    float_nodes: list[str]
    accuracy: float
    steps: list[FallbackStep] = field(default_factory=list)


def keep_float_search(
    ranking: Sequence[Sensitivity],
    build: Callable[[list[str]], float],
    within_budget: Callable[[float], bool],
    *,
    group_size: int,
    max_float_nodes: int,
) -> FallbackResult:
    """Add the most sensitive nodes to the float set `group_size` at a time, rebuilding and
    re-evaluating (`build(float_nodes) -> accuracy`) until `within_budget` or out of options."""
    float_nodes: list[str] = []
    steps: list[FallbackStep] = []
    acc = float("nan")
    order = [s.node for s in ranking]
    while len(float_nodes) < min(max_float_nodes, len(order)):
        room = min(group_size, max_float_nodes - len(float_nodes))
        float_nodes = float_nodes + order[len(float_nodes) : len(float_nodes) + room]
        acc = build(float_nodes)
        steps.append(FallbackStep(list(float_nodes), acc))
        if within_budget(acc):
            return FallbackResult(True, float_nodes, acc, steps)
    return FallbackResult(False, float_nodes, acc, steps)


class Int8Error(RuntimeError):
    """An int8 file could not be made as asked; the message says which file and why."""


@dataclass
class Int8File:
    """What `int8_with_fallback` made: the all-int8 verdict, the nodes kept float (with why),
    the fallback's record (None when it did not run) and the file's MatMul audit."""

    first: Any  # the verdict on the all-int8 file (albert_edge.budget.Verdict)
    float_nodes: list[dict[str, Any]]
    fallback: dict[str, Any] | None
    matmuls: Any  # compress.onnx_graph.MatMulReport


def int8_with_fallback(
    pre: Path,
    dst: Path,
    spec: QuantSpec,
    judge: Callable[[Path], Any],
    *,
    calib: Encoded | None,
    pad_id: int,
    cache: Path | None,
    work: Path,
    sensitivity: tuple[Encoded, Callable[[Path], np.ndarray]] | None = None,
    group_size: int = 4,
    max_float_nodes: int = 32,
    log: Any = None,
    progress: Callable[..., Any] | None = None,
    strict: bool = True,
    prebuilt: bool = False,
) -> Int8File:
    """Quantise `pre` to `dst`; when `judge(path) -> Verdict` fails it and `sensitivity` is given
    as (rows, run_file(path) -> logits on those rows), keep the most sensitive nodes float,
    `group_size` at a time, until the verdict passes or `max_float_nodes` are float.
    strict: Int8Error when a weight MatMul stays float that no fallback asked for.
    prebuilt: `dst` was made by another tool (INC): judge and audit it only."""
    if not prebuilt:
        quantize_onnx(pre, dst, spec, calib=calib, pad_id=pad_id, cache=cache)
    first = judge(dst)
    float_nodes: list[dict[str, Any]] = []
    record: dict[str, Any] | None = None
    if not first.passed and sensitivity is not None:
        rows, run_rows = sensitivity
        reference = run_rows(pre)
        cands = quantizable_nodes(pre, spec)
        if log is not None:
            log.info(
                "  %s: %s; ranking %d nodes by sensitivity on %d calibration rows",
                first.name,
                "; ".join(first.reasons),
                len(cands),
                len(rows),
            )
        ranking = rank_sensitivity(pre, work, spec, cands, reference, run_rows, calib=calib, pad_id=pad_id, cache=cache, progress=progress)
        verdicts: dict[float, Any] = {}

        def build(keep: list[str]) -> float:
            quantize_onnx(pre, dst, spec, calib=calib, exclude=keep, pad_id=pad_id, cache=cache)
            v = judge(dst)
            verdicts[v.accuracy] = v
            if log is not None:
                log.info("    %d float node(s): validation accuracy %.2f%%, fp32 agreement %.2f%%", len(keep), 100 * v.accuracy,
                         100 * (v.agreement or 0))
            return v.accuracy

        result = keep_float_search(ranking, build, lambda a: verdicts[a].passed, group_size=group_size, max_float_nodes=max_float_nodes)
        why = f"accuracy-aware fallback on {first.rows} validation rows: all-int8 " + "; ".join(first.reasons)
        by_node = {s.node: s for s in ranking}
        float_nodes = [{"node": n, "reason": why, "sensitivity_rank": i + 1, "logit_mse": by_node[n].mse, "argmax_flips": by_node[n].flips}
                       for i, n in enumerate(result.float_nodes)]
        record = {"met_budget": result.met, "all_int8": first.as_dict(), "chosen_on": "validation",
                  "steps": [{"float_nodes": len(s.float_nodes), "val_accuracy": s.accuracy} for s in result.steps],
                  "ranking": [{"node": s.node, "logit_mse": s.mse, "argmax_flips": s.flips} for s in ranking]}
        if not result.met and log is not None:
            log.warning("  %s: fallback ran out of options (%d float nodes) at %.2f%%", first.name, len(result.float_nodes),
                        100 * result.accuracy)
    report = matmul_report(dst)
    kept = {f["node"] for f in float_nodes}
    stray = [n for n in report.float_weight_nodes if n not in kept]
    if stray and strict:
        raise Int8Error(f"{first.name}: the quantizer left {len(stray)} of {report.weight_total} weight MatMuls float that no fallback "
                        f"asked for ({', '.join(stray[:5])}); was the graph pre-optimised?")
    return Int8File(first, float_nodes, record, report)


@dataclass(frozen=True)
class KeepFloat:
    """The keep-float fallback's settings, for ONNX and TFLite files alike: whether it runs,
    how many nodes each step adds, the cap, and how many calibration rows rank sensitivity."""

    enabled: bool = True
    group_size: int = 4
    max_float_nodes: int = 32
    sensitivity_rows: int = 64


@dataclass
class OnnxInt8Files:
    """What `onnx_int8_variants` made: the files' records, the fp32 source's size and the
    pre-optimised fp32 graph's MatMul audit (what int8 coverage is read against)."""

    variants: list[ModelVariant]
    src_bytes: int
    matmuls: dict[str, Any]


def onnx_int8_variants(
    src: Path,
    out_dir: Path,
    modes: Sequence[OnnxMode],
    judge: FileJudge,
    report: ReportRows,
    *,
    calib: Encoded,
    work: Path,
    method: CalibMethod = "minmax",
    per_channel: bool = False,
    percentile: float = 99.999,
    backend: str = "native",
    keep_float: KeepFloat,
    inc_max_trials: int = 16,
    log: logging.Logger | None = None,
    progress: Callable[..., Any] | None = None,
) -> OnnxInt8Files:
    """One int8 file per mode (`onnx_int8_variant`) from the fp32 graph `src`, pre-optimised
    once at ORT's basic level (compress.onnx_graph) into `work`."""
    from compress.onnx_graph import preoptimize

    log = log or logging.getLogger("albert_edge")
    src_bytes = src.stat().st_size
    pre = preoptimize(src, work / "pre.onnx")
    coverage = matmul_report(pre).as_dict()
    log.info("  quantising %s (%.2f MB, %d weight MatMuls); judged on %d validation rows, reported on %d eval rows",
             src.name, src_bytes / 1e6, coverage["weight_matmuls"], judge.rows, len(report.enc))
    sens = calib.subset(list(range(min(keep_float.sensitivity_rows, len(calib)))))
    variants = [onnx_int8_variant(pre, out_dir, QuantSpec(mode, method, per_channel, percentile), judge, report, src_bytes=src_bytes,
                                  calib=calib, sensitivity_rows=sens, work=work, backend=backend, keep_float=keep_float,
                                  inc_max_trials=inc_max_trials, log=log, progress=progress)
                for mode in modes]
    return OnnxInt8Files(variants, src_bytes, coverage)


def onnx_int8_variant(
    pre: Path,
    out_dir: Path,
    spec: QuantSpec,
    judge: FileJudge,
    report: ReportRows,
    *,
    src_bytes: int,
    calib: Encoded,
    sensitivity_rows: Encoded,
    work: Path,
    backend: str = "native",
    keep_float: KeepFloat,
    inc_max_trials: int = 16,
    log: logging.Logger | None = None,
    progress: Callable[..., Any] | None = None,
) -> ModelVariant:
    """One ONNX int8 file `model.<precision>.onnx` in `out_dir`, quantised from the pre-optimised
    graph `pre` (or picked by INC's tuning, `backend: inc`), repaired by the keep-float fallback
    when its verdict misses, audited, judged on the validation rows and reported on the eval
    split. Int8Error when the file cannot be made as asked."""
    import time

    log = log or logging.getLogger("albert_edge")
    mode = spec.scheme
    name, precision = f"onnx-{spec.file_tag}", f"int8-{mode}"
    dst = out_dir / f"model.{spec.file_tag}.onnx"
    t0 = time.perf_counter()
    extra: dict[str, Any] = {
        "backend": backend,
        "quantized_from": "model.onnx (ORT basic pre-optimised)",
        "per_channel": spec.per_channel,
        "attention_matmuls_int8": spec.quantizes_attention,
    }
    if mode == "static":
        extra["calibration"] = {"method": spec.method, "rows": len(calib), "split": "train",
                                "activations": "uint8", "weights": "int8", "format": "QDQ"}
    if backend == "inc":
        from compress.onnx_inc import inc_int8

        extra["inc"] = inc_int8(judge, name, pre, dst, mode, calib=calib, max_trials=inc_max_trials)
    last: dict[str, np.ndarray] = {}

    def judge_path(path: Path) -> Verdict:
        last["logits"] = judge.logits(path)
        return judge.verdict(name, last["logits"])

    repair = backend == "native" and keep_float.enabled
    made = int8_with_fallback(
        pre, dst, spec, judge_path, calib=calib, pad_id=judge.pad_id, cache=work / f"ranges.{mode}.json" if mode == "static" else None,
        work=work, sensitivity=(sensitivity_rows, lambda p: judge.logits(p, enc=sensitivity_rows)) if repair else None,
        group_size=keep_float.group_size, max_float_nodes=keep_float.max_float_nodes, log=log, progress=progress,
        strict=backend == "native", prebuilt=backend == "inc")
    if made.fallback is not None:
        extra["fallback"] = made.fallback
    logits = last["logits"] if made.fallback is None else judge.logits(dst)
    scores, _ = score_file(judge, report, name, dst, logits, log=log)
    size = dst.stat().st_size
    audit = made.matmuls
    log.info("  %s: %d/%d weight MatMuls int8, %.2f MB (%.3f of fp32)", name, audit.weight_int8, audit.weight_total,
             size / 1e6, size / src_bytes)
    return ModelVariant.of_file(name, "onnx", precision, dst, out_dir, **extra, **scores, max_abs_diff=None,
                                size_ratio=round(size / src_bytes, 4), matmuls=audit.as_dict(), float_nodes=made.float_nodes,
                                seconds=round(time.perf_counter() - t0, 2))
