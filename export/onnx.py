"""ONNX export: `export_onnx` (the writer the quantize stage calls too), graph tidying that keeps
ALBERT's cross-layer shared weights shared and visible to ONNX Runtime's quantizer, a measured
offline-optimised graph at a level fixed by the config, and the `export_onnx` stage (export, then
always validate against the PyTorch model).

Which files an artifact holds is a function of its config (hence of its cache key), never of a
timing: the stage times the ORT levels and records the result for the reader, and the benchmark
stage measures every file, so a rebuild under the same key writes the same file set and what was
measured downstream is what is in the artifact.

Exporter choice, measured on config:albert-base-v2 (torch 2.13, 1 CPU thread): TorchScript
7 s, dynamo 33 s; both keep the shared layer shared (47 MB). TorchScript routes shared
weights through Identity nodes, dynamo through per-layer Transpose nodes; `tidy_graph` folds
both into plain initializers so every weight MatMul reads an initializer directly.
`auto` therefore tries TorchScript first and falls back to dynamo.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from albert_edge.contract import StageContext, StageError
from albert_edge.registry import stage
from albert_edge.schema import require
from edge_runtime.models import ORT_LEVELS

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "logits"
# Levels whose saved graph is portable (ORT_ENABLE_ALL adds hardware-specific layout changes).
SAVABLE_LEVELS = ("basic", "extended")
SHARED_WEIGHT_SLACK = 1.10  # initializer bytes may exceed 4 x params by this factor (constants)
# `optimize: auto` saves this level: the most fused graph that is still portable across CPUs.
AUTO_LEVEL = "extended"


class ExportError(RuntimeError):
    """The exporters could not write a usable graph."""


def _logits_module(model: Any) -> Any:
    """Wrap a HF classifier so the graph has three named int64 inputs and one `logits` output."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    return LogitsOnly(model).eval()


def _example_inputs(seq_len: int = 16) -> tuple[Any, ...]:
    import torch

    ids = torch.full((2, seq_len), 5, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[1, seq_len // 2 :] = 0  # a padded row, so the mask path is traced with real data
    return ids, mask, torch.zeros_like(ids)


def _export_torchscript(module: Any, args: tuple[Any, ...], path: Path, opset: int) -> None:
    import torch

    axes = {n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES} | {OUTPUT_NAME: {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                          dynamic_axes=axes, opset_version=opset, dynamo=False, do_constant_folding=True)


def _export_dynamo(module: Any, args: tuple[Any, ...], path: Path, opset: int) -> None:
    import torch

    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence", max=4096)
    shapes = {n: {0: batch, 1: seq} for n in INPUT_NAMES}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, args, None, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
                                    dynamic_shapes=shapes, opset_version=opset, dynamo=True, external_data=False, verbose=False)
    program.save(str(path), external_data=False)


EXPORTERS = {"torchscript": _export_torchscript, "dynamo": _export_dynamo}


def tidy_graph(model: Any) -> dict[str, int]:
    """Fold Identity/Transpose nodes that only reshuffle an initializer into initializers.

    Shared ALBERT weights stay shared (one initializer, many consumers), every weight MatMul
    then reads an initializer directly (what onnxruntime's quantizer needs to see it), and
    stale `value_info` (dynamo) is dropped so shape inference starts clean.
    """
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    rename: dict[str, str] = {}
    cache: dict[tuple[str, tuple[int, ...]], str] = {}
    keep = []
    folded = 0
    for node in graph.node:
        src = rename.get(node.input[0], node.input[0]) if node.input else ""
        if node.op_type == "Identity" and src in inits:
            rename[node.output[0]] = src
            folded += 1
            continue
        if node.op_type == "Transpose" and src in inits:
            perm = tuple(next((list(a.ints) for a in node.attribute if a.name == "perm"), []))
            key = (src, perm)
            if key not in cache:
                arr = numpy_helper.to_array(inits[src])
                t = numpy_helper.from_array(np.ascontiguousarray(arr.transpose(perm or None)), name=f"{src}__T")
                graph.initializer.append(t)
                inits[t.name] = t
                cache[key] = t.name
            rename[node.output[0]] = cache[key]
            folded += 1
            continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)
    for out in graph.output:
        if out.name in rename:  # never happens for a classifier; keep the graph valid anyway
            raise ExportError(f"graph output {out.name} is a bare weight")
    used = {n for node in graph.node for n in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for i in unused:
        graph.initializer.remove(i)
    dropped_vi = len(graph.value_info)
    del graph.value_info[:]
    return {"folded_nodes": folded, "dropped_initializers": len(unused), "dropped_value_info": dropped_vi}


def check_shared_weights(path: Path, num_params: int, bytes_per_param: int = 4) -> dict[str, Any]:
    """Fail when the file holds more weight bytes than the model has parameters (unrolled layers)."""
    from compress.onnx_graph import initializer_bytes

    got = sum(initializer_bytes(path).values())
    limit = SHARED_WEIGHT_SLACK * bytes_per_param * num_params + 64 * 1024
    if got > limit:
        raise ExportError(f"{path.name} holds {got / 1e6:.1f} MB of weights for {num_params / 1e6:.2f} M parameters "
                          f"({got / (bytes_per_param * num_params):.2f}x): shared ALBERT layers were unrolled")
    return {"initializer_bytes": got, "weight_ratio": round(got / (bytes_per_param * num_params), 4)}


@contextlib.contextmanager
def attention_implementation(model: Any, attention: str | None) -> Iterator[None]:
    """Trace `model` with transformers' `eager` or `sdpa` attention (None: as loaded), then restore."""
    before = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if attention is None or attention == before or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation(attention)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def export_onnx(model: Any, path: Path, *, opset: int = 17, exporter: str = "auto", attention: str | None = "eager") -> dict[str, Any]:
    """Write `model` (a HF sequence classifier) to `path` as an fp32 ONNX graph.

    Inputs input_ids/attention_mask/token_type_ids (int64, dynamic batch and sequence),
    output `logits`. exporter: auto (TorchScript, then dynamo), torchscript or dynamo.
    attention: the attention code traced; `eager` (explicit MatMul/Softmax) ran faster in ONNX
    Runtime than transformers 5's default `sdpa` (sst2-mobile teacher, int8 at 128 tokens:
    7.8 vs 9.7 ms), `sdpa` keeps the default, None leaves the model as loaded.
    Returns what was used: exporter, opset, attention, size_bytes, seconds, tidy stats, fallbacks.
    """
    if attention not in (None, "eager", "sdpa"):
        raise ValueError(f"attention {attention!r}: use eager, sdpa or None")
    with attention_implementation(model, attention):
        return _export_onnx(model, Path(path), opset, exporter, attention)


def _export_onnx(model: Any, path: Path, opset: int, exporter: str, attention: str | None) -> dict[str, Any]:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    module = _logits_module(model)
    order = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    if any(e not in EXPORTERS for e in order):
        raise ValueError(f"unknown exporter {exporter!r}; use auto, torchscript or dynamo")
    errors: list[str] = []
    for name in order:
        t0 = time.perf_counter()
        try:
            EXPORTERS[name](module, _example_inputs(), path, opset)
            proto = onnx.load(str(path))
            stats = tidy_graph(proto)
            onnx.checker.check_model(proto)
            onnx.save(proto, str(path))
        except Exception as err:  # one exporter failing is expected: try the next
            errors.append(f"{name}: {type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}")
            path.unlink(missing_ok=True)
            continue
        return {"exporter": name, "opset": opset, "attention": attention or "as loaded", "size_bytes": path.stat().st_size,
                "seconds": round(time.perf_counter() - t0, 2), "fallbacks": errors, **stats}
    raise ExportError("ONNX export failed: " + " | ".join(errors))


def optimize_onnx(src: Path, dst: Path, level: str) -> Path:
    """Save the graph ONNX Runtime builds at `level` (basic or extended: portable across CPUs)."""
    from edge_runtime.models import ort_session

    if level not in SAVABLE_LEVELS:
        raise ValueError(f"level {level!r}: save only {', '.join(SAVABLE_LEVELS)} graphs (ORT_ENABLE_ALL is hardware-specific)")
    ort_session(str(src), 1, level, save_to=str(dst))
    return Path(dst)


def time_ort_level(path: Path, level: str, *, seq_len: int, runs: int = 15, threads: int = 1, timeout: float = 300) -> float:
    """Median ms per batch-1 run of `path` loaded at ORT `level`, measured by edge_runtime.measure
    in a fresh interpreter so this process's torch threads and memory do not skew it."""
    import edge_runtime
    from edge_runtime.measure import synthetic_npz

    root = str(Path(edge_runtime.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])), OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory(prefix="ort-level-") as tmp:
        inputs = synthetic_npz(Path(tmp) / "inputs.npz", rows=2, width=seq_len, vocab=1000)
        argv = [sys.executable, "-m", "edge_runtime.measure", "--model", str(path), "--runtime", "onnxruntime", "--ort-level", level,
                "--threads", str(threads), "--inputs", str(inputs), "--seq-len", str(seq_len), "--runs", str(runs),
                "--min-secs", "0", "--warmup", "2", "--warmup-min-secs", "0"]
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    if not result.get("ok"):
        why = result.get("error") or (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise RuntimeError(f"timing {path.name} at ORT level {level} failed: {why}")
    return round(float(result["latency"][0]["p50_ms"]), 4)


def time_levels(path: Path, opt_path: Path | None, *, seq_len: int, runs: int = 15, threads: int = 1) -> dict[str, Any]:
    """Time the plain graph at every ORT level and, if given, the saved optimised graph (loaded
    with no further optimisation) against the plain one loaded the same way. Information only:
    it decides nothing about which files the artifact keeps."""
    level_ms = {lv: time_ort_level(path, lv, seq_len=seq_len, runs=runs, threads=threads) for lv in ORT_LEVELS}
    out: dict[str, Any] = {"level_ms": level_ms, "best_level": min(ORT_LEVELS, key=lambda lv: level_ms[lv]),
                           "seq_len": seq_len, "runs": runs, "threads": threads}
    if opt_path is not None:
        opt_ms, plain_ms = time_ort_level(opt_path, "disabled", seq_len=seq_len, runs=runs, threads=threads), level_ms["disabled"]
        out.update(opt_ms=opt_ms, plain_ms=plain_ms, opt_gain=round(1.0 - opt_ms / plain_ms, 4))
    return out


def resolve_optimize(value: str | bool) -> str | None:
    """The ORT level whose offline graph the artifact holds (None: no optimised file).
    Deterministic, so the file set follows from the config alone."""
    if value is True or value == "auto":
        return AUTO_LEVEL
    if value is False or value == "none":
        return None
    return str(value)


@dataclass(frozen=True)
class ExportOnnxConfig:
    """Export the latest model to ONNX and validate it against the PyTorch model."""

    opset: int = 17
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    attention: Literal["eager", "sdpa"] = "eager"  # eager attention ran faster in onnxruntime (see export_onnx)
    parity_rows: int = 64
    atol: float = 1e-4
    # offline-optimised graph to add beside model.onnx: auto (= extended), basic, extended or none;
    # true/false are the older spelling of auto/none
    optimize: Literal["auto", "basic", "extended", "none"] | bool = "auto"
    timing_runs: int = 15

    def check(self) -> None:
        require(17 <= self.opset <= 21, "opset", f"opset {self.opset} is outside 17..21", "17 runs on every current onnxruntime")
        require(self.parity_rows >= 1, "parity_rows", "check at least one row")
        require(0 < self.atol <= 1, "atol", f"{self.atol} should be in (0, 1]", "fp32 files: 1e-4")
        require(self.timing_runs >= 3, "timing_runs", "time at least 3 runs per level")


def file_variant(name: str, path: Path, art_dir: Path, precision: str, parity: Any, accuracy: float, **extra: Any) -> dict[str, Any]:
    """A variant record (schema shared by export and quantize artifacts)."""
    from albert_edge.artifacts import sha256_file

    return {"name": name, "format": "onnx", "precision": precision, "file": str(path.relative_to(art_dir)), "seq_len": None,
            "accuracy": accuracy, "agreement": parity.agreement, "max_abs_diff": parity.max_abs_diff,
            "size_bytes": path.stat().st_size, "sha256": sha256_file(path), "parity_rows": parity.rows, **extra}


@stage("export_onnx", config=ExportOnnxConfig, version="4", inputs=("model", "?teacher"), output="onnx")
def export_onnx_stage(ctx: StageContext[ExportOnnxConfig]) -> dict[str, Any]:
    """Export to ONNX (shared weights kept shared), add the configured offline-optimised graph, time ORT levels, check parity."""
    from albert_edge.models import count_parameters
    from albert_edge.stages.common import load_input_model, task_data
    from export.parity import check, file_logits, require_parity, split_accuracies, torch_logits

    cfg: ExportOnnxConfig = ctx.config
    model, tok, _ = load_input_model(ctx)
    params = count_parameters(model)
    path = ctx.out_dir / "model.onnx"
    try:
        used = export_onnx(model, path, opset=cfg.opset, exporter=cfg.exporter, attention=cfg.attention)
        weights = check_shared_weights(path, params)
    except ExportError as err:
        raise StageError(str(err)) from None
    ctx.log.info("  exported with %s (opset %d) in %.1fs: %.2f MB, %d weight nodes folded", used["exporter"], cfg.opset,
                 used["seconds"], used["size_bytes"] / 1e6, used["folded_nodes"])
    data = task_data(ctx, tok, ("validation", "eval"))
    val, enc = data["validation"], data["eval"]
    rows = list(range(min(cfg.parity_rows, len(val))))
    part = val.subset(rows)
    pad = tok.pad_token_id or 0
    ref = torch_logits(model, part, pad_id=pad)
    files = [("onnx-fp32", path, {})]
    timing: dict[str, Any] = {}
    level = resolve_optimize(cfg.optimize)
    opt_path = ctx.out_dir / "model.opt.onnx" if level else None
    if opt_path is not None:
        optimize_onnx(path, opt_path, level)
        files.append(("onnx-fp32-opt", opt_path, {"ort_optimization": level, "load_with_level": "disabled"}))
        seq = max(8, min(ctx.pipeline.task.max_seq_len, 128))
        timing = time_levels(path, opt_path, seq_len=seq, runs=cfg.timing_runs, threads=ctx.pipeline.threads)
        ctx.log.info("  ORT levels (ms, seq %d, for information): %s; fastest %s; offline %s graph %.3f vs %.3f ms", seq,
                     timing["level_ms"], timing["best_level"], level, timing["opt_ms"], timing["plain_ms"])
    results, variants = [], []
    for name, file, extra in files:
        val_logits = file_logits(file, val, threads=ctx.pipeline.threads, pad_id=pad)
        res = check(name, ref, val_logits[rows], part.labels, precision="fp32", atol=cfg.atol)
        ctx.log.info("  %s", res.summary())
        results.append(res)
        accs = split_accuracies(val_logits, val, file_logits(file, enc, threads=ctx.pipeline.threads, pad_id=pad), enc)
        variants.append(file_variant(name, file, ctx.out_dir, "fp32", res, accs["accuracy"], val_accuracy=accs["val_accuracy"],
                                     parity_split="validation", exporter=used["exporter"], opset=cfg.opset, **extra))
    require_parity(results)
    ctx.info["variants"] = variants
    ctx.info["export"] = used
    ctx.info["ort_timing"] = timing
    main = variants[0]
    return {"accuracy": main["accuracy"], "val_accuracy": main["val_accuracy"], "agreement": main["agreement"],
            "max_abs_diff": max(r.max_abs_diff for r in results), "parity_rows": len(rows), "size_bytes": main["size_bytes"], "size_mb": round(main["size_bytes"] / 1e6, 3),
            "exporter": used["exporter"], "export_seconds": used["seconds"], "params": params, **weights,
            "ort_best_level": timing.get("best_level"), "optimized_level": level or "none"}

