"""TFLite export with litert-torch (no TensorFlow): fp32, fp16 and dynamic-range int8 files,
one signature per sequence-length bucket, each file checked against PyTorch before it counts.

Layout: ONE .tflite file per precision holding one fixed-shape signature per bucket
("seq_32", "seq_64", ...). The signatures share a single weight set, and after
`export.tflite_compact` also one table per weight tensor (name, shape, quantisation), so each
extra bucket costs only its operator and activation tables (tens of KB), where separate files
would repeat every weight.
Inputs are int32 (litert-torch's default; TFLite's native index type, what Android's
`int[]`/`IntBuffer` feeds directly); batch is fixed at 1 (litert-torch 0.10 cannot lower a
dynamic batch through the position-id arange). A caller runs the smallest bucket holding the
real length (`edge_runtime.pick_bucket`), as `edge_runtime.open_model` does itself.

fp16, int8-dynamic and int8-static are made from the fp32 file with ai-edge-quantizer (fp16
weights with float compute; int8 channel-wise weights with int8 dynamic-range compute; int8
weights and activations calibrated on training rows), so all precisions share one conversion.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from albert_edge.artifacts import sha256_file
from albert_edge.data import Encoded
from edge_runtime import SIGNATURE_PREFIX
from export.tflite_compact import compact_tflite, unique_names_copy

Precision = Literal["fp32", "fp16", "int8-dynamic", "int8-static"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8-dynamic", "int8-static")
Granularity = Literal["channel", "tensor"]
INPUT_DTYPE = "int32"
# Measured: tflite-runtime 2.14 loads channel-wise int8-dynamic files but returns the same
# logits for every input (its hybrid FULLY_CONNECTED mishandles per-channel scales), while
# ai-edge-litert runs them correctly; tensor-wise files agree on both.
INT8_COMPAT = {"channel": "ai-edge-litert only (tflite-runtime 2.14 gives wrong logits)", "tensor": "ai-edge-litert, tflite-runtime 2.14"}
MAX_BUCKET = 512  # ALBERT's position table


class TFLiteExportError(RuntimeError):
    """Conversion or quantisation failed; the message says which step and why."""


def signature_name(seq_len: int) -> str:
    """The signature that serves `seq_len` tokens (edge_runtime reads the same convention)."""
    return f"{SIGNATURE_PREFIX}{seq_len}"


def _bucket_module(model: Any) -> Any:
    """(input_ids, attention_mask, token_type_ids) -> {"logits"} with the additive mask built here.

    transformers' own 2-D mask expansion lowers to a bool GATHER_ND (op version 5) that
    tflite-runtime 2.14 cannot run; a ready 4-D additive mask (which transformers passes
    through as-is) gives identical logits with only long-supported ops.
    """
    import torch

    class BucketLogits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> dict[str, Any]:
            bias = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
            return {"logits": self.inner(input_ids=input_ids, attention_mask=bias, token_type_ids=token_type_ids).logits}

    return BucketLogits(model).eval()


def _sample(seq_len: int) -> dict[str, Any]:
    import torch

    ids = torch.randint(5, 1000, (1, seq_len), dtype=torch.int32)
    mask = torch.ones_like(ids)
    mask[0, seq_len // 2 :] = 0  # trace the padded path with real data
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """litert-torch prints a progress tree and ai-edge-quantizer warns once per shared weight
    buffer (expected: the bucket signatures share weights) through `logging.warning`, which
    also installs a root handler that doubles every later log line; undo all of that."""
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)


def _convert_fp32(model: Any, out_path: Path, seq_lens: Sequence[int]) -> None:
    with _quiet():
        import litert_torch

        module = _bucket_module(model)
        conv = litert_torch.Converter()
        for seq in sorted(seq_lens):
            conv.signature(signature_name(seq), module, sample_kwargs=_sample(seq))
        try:
            conv.convert().export(str(out_path))
        except Exception as err:  # litert-torch raises many types; name the step
            raise TFLiteExportError(f"litert-torch could not convert the model ({type(err).__name__}: {err})") from err


def calibration_feeds(enc: Encoded, seq_lens: Sequence[int], pad_id: int = 0) -> dict[str, list[dict[str, np.ndarray]]]:
    """{signature: [int32 feeds]} for static calibration: each row padded to its own bucket, as at
    run time; a bucket no row falls in is calibrated on every row padded/truncated to it."""
    from albert_edge.data import pad_batch
    from edge_runtime import pick_bucket

    out = {}
    for seq in sorted(seq_lens):
        idx = [i for i, n in enumerate(enc.lengths()) if pick_bucket(n, seq_lens) == seq] or list(range(len(enc)))
        rows = []
        for i in idx:
            b = pad_batch(enc, [i], pad_id, pad_to=seq)
            rows.append({k: b[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")})
        out[signature_name(seq)] = rows
    return out


def scope_regex(scopes: Sequence[str]) -> str:
    """An ai-edge-quantizer recipe regex that matches exactly the operators whose output tensors
    are `scopes` (the quantizer matches `<output names>;` with re.search, so anchor both ends)."""
    return "^(?:" + "|".join(re.escape(s) for s in scopes) + ");$"


def quantize_tflite(float_file: Path, out_path: Path, precision: Precision,
                    calibration: dict[str, list[dict[str, np.ndarray]]] | None = None, threads: int = 1,
                    granularity: Granularity = "channel", *, keep_float: Sequence[str] = (), only: Sequence[str] | None = None,
                    stats_cache: dict[str, Any] | None = None) -> None:
    """Write a reduced-precision copy of an fp32 .tflite file (all signatures) with ai-edge-quantizer.

    calibration: feeds per signature (see calibration_feeds), needed by int8-static only.
    granularity: int8-dynamic weight scales per output channel (more accurate) or per tensor
    (smaller, and the only kind tflite-runtime 2.14 computes correctly, see INT8_COMPAT).
    keep_float / only: operator scopes (output tensor names in unique_names_copy(float_file),
    see export.tflite_audit.WeightMatmul.scopes) kept float, or the only ones quantised: the
    int8 keep-float fallback and its sensitivity probes. stats_cache: a dict that keeps the
    int8-static calibration between calls on the same float file and rows (calibrated with
    the full recipe, so any restriction of it finds its ranges).
    """
    if precision == "fp32":
        shutil.copyfile(float_file, out_path)
        return
    if precision == "int8-static" and not calibration:
        raise TFLiteExportError("int8-static needs calibration rows (pass calibration=calibration_feeds(...))")
    with _quiet(), tempfile.TemporaryDirectory(prefix="tflite-q-") as tmp:
        from ai_edge_quantizer import qtyping, quantizer, recipe
        from ai_edge_quantizer.algorithm_manager import AlgorithmName

        # a compacted file names a shared weight alike in every signature; the quantiser keys by name
        source = unique_names_copy(Path(float_file), Path(tmp) / "float.tflite")

        if precision == "int8-dynamic" and granularity == "tensor":
            q = quantizer.Quantizer(str(source))
            q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=8,
                                 granularity=qtyping.QuantGranularity.TENSORWISE)
        elif precision == "int8-dynamic":
            q = quantizer.Quantizer(str(source), recipe.dynamic_wi8_afp32())
            # the embedding table per tensor: its per-row scales and zero points (30k rows x 12 B)
            # cost 0.37 MB; per tensor gave the same accuracy on sst2-mobile (89.56 %)
            q.add_dynamic_config(regex=".*", operation_name=qtyping.TFLOperationName.EMBEDDING_LOOKUP, num_bits=8,
                                 granularity=qtyping.QuantGranularity.TENSORWISE)
        elif precision == "int8-static":
            q = quantizer.Quantizer(str(source), recipe.static_wi8_ai8())
        elif precision == "fp16":
            q = quantizer.Quantizer(str(source))
            q.add_weight_only_config(regex=".*", operation_name=qtyping.TFLOperationName.ALL_SUPPORTED, num_bits=16,
                                     algorithm_key=AlgorithmName.FLOAT_CASTING)
        else:
            raise TFLiteExportError(f"precision {precision!r} is not made by ai-edge-quantizer here (choose from {', '.join(PRECISIONS)})")
        try:
            stats = None
            if precision == "int8-static":
                cache = stats_cache if stats_cache is not None else {}
                if "stats" not in cache:
                    cache["stats"] = q.calibrate(calibration, num_threads=threads)
                stats = cache["stats"]
            if only is not None or keep_float:
                _restrict(q, only, keep_float)
            q.quantize(stats, enable_progress_bar=False, enable_progress_report=False).export_model(str(out_path), overwrite=True)
        except Exception as err:
            raise TFLiteExportError(f"ai-edge-quantizer could not make the {precision} file ({type(err).__name__}: {err})") from err


def _restrict(q: Any, only: Sequence[str] | None, keep_float: Sequence[str]) -> None:
    """Narrow a quantizer's recipe: every rule's scope becomes `only` (when given), then the
    `keep_float` operators get NO_QUANTIZE, added last (the quantizer lets later rules win)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    if only is not None:
        if not only:
            raise TFLiteExportError("only=[] would quantise nothing")
        q.load_quantization_recipe([{**rule, "regex": scope_regex(only)} for rule in q.get_quantization_recipe()])
    if keep_float:
        q.update_quantization_recipe(regex=scope_regex(keep_float), operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=AlgorithmName.NO_QUANTIZE)


def convert_tflite(model: Any, out_path: Path, *, seq_lens: tuple[int, ...] = (32, 64, 128), precision: Precision = "fp32",
                   float_file: Path | None = None, calibration: Encoded | None = None, pad_id: int = 0,
                   threads: int = 1, granularity: Granularity = "channel") -> dict[str, Any]:
    """Write `model` (a HF sequence classifier) to `out_path` as one .tflite file with one
    signature per bucket in `seq_lens`, at `precision`; return its variant fields.

    float_file: an fp32 file from an earlier call with the same seq_lens, reused instead of
    converting again (the other precisions are made from it). calibration: tokenised rows
    (e.g. a slice of the train split), required for int8-static. granularity: int8-dynamic
    weight scales, see quantize_tflite. Raises TFLiteExportError.
    """
    if not seq_lens or any(not 1 <= s <= MAX_BUCKET for s in seq_lens):
        raise TFLiteExportError(f"buckets {list(seq_lens)} must be 1..{MAX_BUCKET} tokens")
    if precision not in PRECISIONS:
        raise TFLiteExportError(f"precision {precision!r}: litert-torch export makes {', '.join(PRECISIONS)}")
    if precision == "int8-static" and (calibration is None or len(calibration) == 0):
        raise TFLiteExportError("int8-static needs calibration rows: pass calibration=<Encoded rows of the train split>")
    feeds = calibration_feeds(calibration, seq_lens, pad_id) if precision == "int8-static" and calibration is not None else None
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model.eval()
    t0 = time.perf_counter()
    if precision == "fp32":
        _convert_fp32(model, out_path, seq_lens)
    elif float_file is not None:
        quantize_tflite(Path(float_file), out_path, precision, feeds, threads, granularity)
    else:
        with tempfile.TemporaryDirectory(prefix="tflite-") as tmp:
            fp32 = Path(tmp) / "model.fp32.tflite"
            _convert_fp32(model, fp32, seq_lens)
            quantize_tflite(fp32, out_path, precision, feeds, threads, granularity)
    compacted = compact_tflite(out_path)  # share weight tables across bucket signatures; bit-identical logits
    buckets = sorted(seq_lens)
    extra = {"weight_granularity": granularity, "interpreters": INT8_COMPAT[granularity]} if precision == "int8-dynamic" else {}
    return {
        "format": "tflite", "precision": precision, "buckets": buckets,
        "signatures": {str(s): signature_name(s) for s in buckets}, "input_dtype": INPUT_DTYPE, "batch": 1,
        "inputs": ["input_ids", "attention_mask", "token_type_ids"], "output": "logits",
        "converter": f"litert-torch {md.version('litert-torch')}" + ("" if precision == "fp32" else " + ai-edge-quantizer"),
        "size_bytes": out_path.stat().st_size, "sha256": sha256_file(out_path), "seconds": round(time.perf_counter() - t0, 2),
        "compaction": compacted.as_dict(), **extra,
    }
