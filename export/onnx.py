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
from pathlib import Path
from typing import Any

import numpy as np

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
