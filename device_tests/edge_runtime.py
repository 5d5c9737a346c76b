"""Run exported model files with only numpy and one runtime installed.

This single module is shipped to devices (ssh, qemu) as it is, so it must import nothing from
albert-edge and nothing beyond numpy and the runtime. The host uses the same code for parity
checks and benchmarks, so the device runs exactly what was validated.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Interpreters in order of preference for .tflite files.
TFLITE_RUNTIMES = ("litert", "tflite-runtime", "tf.lite")


class ModelLoadError(RuntimeError):
    """A model file that cannot be opened: missing, truncated, corrupt, or with unsupported ops."""


def runtime_available(runtime: str) -> str:
    """'' if the runtime imports here, else a plain-words reason."""
    module = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter", "tf.lite": "tensorflow", "torch": "torch"}.get(runtime)
    if module is None:
        return f"unknown runtime {runtime!r}"
    try:
        importlib.import_module(module)
    except ImportError as err:
        if runtime == "tflite-runtime" and "numpy" in str(err).lower():
            return "tflite-runtime was built for numpy < 2 and cannot load beside this numpy"
        return f"{runtime} is not installed ({err})"
    except Exception as err:  # e.g. _ARRAY_API not found: built against numpy 1.x
        return f"{runtime} failed to import ({type(err).__name__}: {err}); tflite-runtime 2.14 needs numpy < 2"
    return ""


def available_runtimes() -> list[str]:
    return [r for r in ("onnxruntime", *TFLITE_RUNTIMES) if not runtime_available(r)]


def runtime_for(path: str, runtime: str | None = None) -> str:
    if runtime:
        return runtime
    if path.endswith(".onnx"):
        return "onnxruntime"
    if path.endswith(".tflite"):
        for r in TFLITE_RUNTIMES:
            if not runtime_available(r):
                return r
        raise ModelLoadError("no TFLite interpreter here: pip install ai-edge-litert (or tflite-runtime)")
    raise ModelLoadError(f"{path}: unknown model format (expected .onnx or .tflite)")


def pick_bucket(length: int, buckets: list[int] | tuple[int, ...]) -> int:
    """The smallest bucket that holds `length` tokens; the largest bucket if none does (truncate)."""
    if not buckets:
        raise ValueError("no buckets")
    ordered = sorted(buckets)
    for b in ordered:
        if length <= b:
            return b
    return ordered[-1]


def fit_length(arr: np.ndarray, length: int, pad: int = 0) -> np.ndarray:
    """Pad (with `pad`) or truncate the last axis to `length`."""
    if arr.shape[-1] >= length:
        return arr[..., :length]
    out = np.full(arr.shape[:-1] + (length,), pad, dtype=arr.dtype)
    out[..., : arr.shape[-1]] = arr
    return out


@dataclass
class EdgeModel:
    """A loaded model file: call it with int64 arrays [batch, seq] and get logits [batch, labels]."""

    path: str
    runtime: str
    fixed_seq_len: int | None
    fixed_batch: int | None
    run: Callable[[dict[str, np.ndarray]], np.ndarray]

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None) -> np.ndarray:
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        if self.fixed_seq_len:
            feeds = {k: fit_length(v, self.fixed_seq_len) for k, v in feeds.items()}
        if self.fixed_batch and input_ids.shape[0] != self.fixed_batch:
            rows = [self.run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(input_ids.shape[0])]
            return np.concatenate(rows, axis=0)
        return self.run(feeds)


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: file not found")
    if os.path.getsize(path) < 16:
        raise ModelLoadError(f"{path}: file is empty or truncated ({os.path.getsize(path)} bytes)")


def _open_onnx(path: str, threads: int) -> EdgeModel:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    try:
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise ModelLoadError(f"{path}: {_plain_reason('onnxruntime', _first_line(err))}") from None
    names = [i.name for i in sess.get_inputs()]
    dims = sess.get_inputs()[0].shape
    fixed_seq = dims[1] if len(dims) > 1 and isinstance(dims[1], int) else None
    fixed_batch = dims[0] if isinstance(dims[0], int) else None
    out_name = sess.get_outputs()[0].name

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return sess.run([out_name], {n: feeds[n].astype(np.int64) for n in names})[0]

    return EdgeModel(path, "onnxruntime", fixed_seq, fixed_batch, run)


def _tflite_interpreter(path: str, runtime: str, threads: int) -> Any:
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter
    elif runtime == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter
    else:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter  # noqa: N806
    try:
        interp = Interpreter(model_path=path, num_threads=threads)
        interp.allocate_tensors()
    except Exception as err:
        raise ModelLoadError(f"{path}: {_plain_reason(runtime, _first_line(err))}") from None
    return interp


def _input_role(name: str, position: int) -> str:
    low = name.lower()
    for role in INPUT_NAMES:
        if role in low:
            return role
    if "mask" in low:
        return "attention_mask"
    if "type" in low or "segment" in low:
        return "token_type_ids"
    return INPUT_NAMES[position] if position < len(INPUT_NAMES) else f"arg{position}"


def _open_tflite(path: str, runtime: str, threads: int) -> EdgeModel:
    interp = _tflite_interpreter(path, runtime, threads)
    inputs = interp.get_input_details()
    out = interp.get_output_details()[0]
    roles = [_input_role(d["name"], i) for i, d in enumerate(inputs)]
    shape = inputs[0]["shape"]
    fixed_seq = int(shape[1]) if len(shape) > 1 else None
    fixed_batch = int(shape[0])

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        for d, role in zip(inputs, roles):
            interp.set_tensor(d["index"], feeds[role].astype(d["dtype"]))
        interp.invoke()
        result = interp.get_tensor(out["index"])
        if out["dtype"] != np.float32:  # full-integer models: dequantise the logits
            scale, zero = out["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        return np.array(result, dtype=np.float32)

    return EdgeModel(path, runtime, fixed_seq, fixed_batch, run)


def open_model(path: str, runtime: str | None = None, threads: int = 2) -> EdgeModel:
    """Load a .onnx or .tflite file with the given (or best available) runtime."""
    _check_file(path)
    rt = runtime_for(path, runtime)
    problem = runtime_available(rt)
    if problem:
        raise ModelLoadError(problem)
    if rt == "onnxruntime":
        return _open_onnx(path, threads)
    return _open_tflite(path, rt, threads)


def _plain_reason(runtime: str, msg: str) -> str:
    """Say in plain words why a runtime refused a file, keeping its own message in brackets."""
    low = msg.lower()
    if "op" in low and any(w in low for w in ("version", "registration", "unsupported", "unresolved", "not a registered", "not implemented")):
        hint = "; a newer interpreter (ai-edge-litert) may" if runtime != "onnxruntime" else "; export without custom ops or use a build that has it"
        return f"{runtime} does not support an op in this file ({msg}){hint}"
    if any(w in low for w in ("protobuf parsing failed", "not a valid flatbuffer", "invalid_protobuf", "truncated", "corrupt")):
        return f"file is corrupt or truncated: {runtime} cannot parse it ({msg})"
    return f"{runtime} cannot load it ({msg})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
