"""Open exported model files (.onnx, .tflite) with only numpy and one runtime installed.

Shipped to devices with the rest of this package, so it imports nothing from albert-edge and
nothing beyond numpy and the runtime. The host runs the same code for parity checks, bundles and
benchmarks, so a device runs exactly what was validated.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# runtime name -> the module that provides it, and the distribution that installs it
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert.interpreter", "tflite-runtime": "tflite_runtime.interpreter",
                   "tf.lite": "tensorflow", "torch": "torch", "executorch": "executorch.runtime"}
RUNTIME_DISTS = {"onnxruntime": "onnxruntime", "litert": "ai-edge-litert", "tflite-runtime": "tflite-runtime", "tf.lite": "tensorflow",
                 "torch": "torch", "executorch": "executorch"}
# Interpreters in order of preference for .tflite files.
TFLITE_RUNTIMES = ("litert", "tflite-runtime", "tf.lite")
# A .tflite file exported with sequence-length buckets holds one fixed-shape signature per
# bucket, named SIGNATURE_PREFIX + str(seq_len) ("seq_32", "seq_64", ...), sharing one weight set.
SIGNATURE_PREFIX = "seq_"
# ONNX Runtime graph optimisation levels, least to most.
ORT_LEVELS = ("disabled", "basic", "extended", "all")
# tflite-runtime never published a wheel built against numpy 2: up to this version it needs numpy < 2.
_TFLITE_RUNTIME_LAST_NUMPY1 = (2, 14)


class ModelLoadError(RuntimeError):
    """A model file that cannot be opened: missing, truncated, corrupt, or with unsupported ops."""


def runtime_available(runtime: str) -> str:
    """'' if the runtime imports here, else a plain-words reason."""
    module = RUNTIME_MODULES.get(runtime)
    if module is None:
        return f"unknown runtime {runtime!r}"
    try:
        importlib.import_module(module)
    except ImportError as err:
        if runtime == "tflite-runtime" and "numpy" in str(err).lower():
            return f"tflite-runtime was built for numpy < 2 and cannot load beside numpy {np.__version__}; {_NUMPY_FIX}"
        return f"{runtime} is not installed ({err})"
    except Exception as err:  # e.g. _ARRAY_API not found: built against numpy 1.x
        return f"{runtime} failed to import ({type(err).__name__}: {err}); tflite-runtime 2.14 needs numpy < 2"
    if runtime == "tflite-runtime":
        return tflite_runtime_numpy_problem(getattr(importlib.import_module("tflite_runtime"), "__version__", None))
    return ""


_NUMPY_FIX = "use ai-edge-litert here, or run tflite-runtime in an environment with numpy<2"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:2])


def tflite_runtime_numpy_problem(tflite_runtime_version: str | None, numpy_version: str | None = None) -> str:
    """'' if this tflite-runtime can work beside this numpy, else why not, in plain words.

    tflite-runtime <= 2.14 (the last release) was compiled against numpy 1.x. Beside numpy 2 it
    still imports, but opening a model prints "_ARRAY_API not found" and tensor access can crash
    the process, so it is refused up front instead.
    """
    numpy_version = numpy_version or np.__version__
    if not tflite_runtime_version or _version_tuple(numpy_version)[:1] < (2,):
        return ""
    if _version_tuple(tflite_runtime_version) <= _TFLITE_RUNTIME_LAST_NUMPY1:
        return (f"tflite-runtime {tflite_runtime_version} was built for numpy 1.x and cannot run beside numpy {numpy_version} "
                f"(it fails with '_ARRAY_API not found' and may crash); {_NUMPY_FIX}")
    return ""


def runtime_version(runtime: str) -> str | None:
    """The installed version of the runtime's distribution, None if it is not installed."""
    try:
        return md.version(RUNTIME_DISTS[runtime])
    except (md.PackageNotFoundError, KeyError):
        return None


def runtime_for(path: str, runtime: str | None = None) -> str:
    """The runtime asked for, else the one for the file's format (the first usable TFLite interpreter)."""
    if runtime:
        return runtime
    if path.endswith(".onnx"):
        return "onnxruntime"
    if path.endswith(".tflite"):
        reasons = []
        for r in TFLITE_RUNTIMES:  # lazily: importing tensorflow costs seconds
            why = runtime_available(r)
            if not why:
                return r
            reasons.append(why)
        raise _no_tflite_interpreter(reasons)
    raise ModelLoadError(f"{path}: unknown model format (expected .onnx or .tflite)")


def _no_tflite_interpreter(reasons: list[str]) -> ModelLoadError:
    return ModelLoadError("no TFLite interpreter here: pip install ai-edge-litert (or tflite-runtime). " + "; ".join(reasons))


def pick_bucket(length: int, buckets: list[int] | tuple[int, ...]) -> int:
    """The smallest bucket that holds `length` tokens; the largest bucket if none does (truncate)."""
    if not buckets:
        raise ValueError("no buckets")
    ordered = sorted(buckets)
    for b in ordered:
        if length <= b:
            return b
    return ordered[-1]


def real_length(attention_mask: np.ndarray) -> int:
    """Tokens up to the last position any row attends to (at least 1): what picks the bucket."""
    used = np.flatnonzero(np.asarray(attention_mask).reshape(-1, attention_mask.shape[-1]).any(axis=0))
    return int(used[-1]) + 1 if used.size else 1


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
    # Bucketed files (one fixed-length signature per bucket): each call runs the smallest bucket
    # that holds the real length (see pick_bucket), padding or truncating to it.
    buckets: tuple[int, ...] = ()

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None) -> np.ndarray:
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        width = pick_bucket(real_length(attention_mask), self.buckets) if self.buckets else self.fixed_seq_len
        if width:
            feeds = {k: fit_length(v, width) for k, v in feeds.items()}
        if self.fixed_batch and input_ids.shape[0] != self.fixed_batch:
            rows = [self.run({k: v[i : i + 1] for k, v in feeds.items()}) for i in range(input_ids.shape[0])]
            return np.concatenate(rows, axis=0)
        return self.run(feeds)


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise ModelLoadError(f"{path}: file not found")
    if os.path.getsize(path) < 16:
        raise ModelLoadError(f"{path}: file is empty or truncated ({os.path.getsize(path)} bytes)")


def ort_session(path: str, threads: int, level: str | None = None, save_to: str | None = None) -> Any:
    """An ONNX Runtime CPU session: `threads` intra-op threads, one inter-op thread, graph
    optimisation `level` (ORT_LEVELS; None: ORT's default) and, with `save_to`, the optimised
    graph written there. Errors pass through as ONNX Runtime raises them."""
    import onnxruntime as ort

    levels = {"disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED, "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if level is not None:
        opts.graph_optimization_level = levels[level]
    if save_to is not None:
        opts.optimized_model_filepath = str(save_to)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _open_onnx(path: str, threads: int, level: str | None = None) -> EdgeModel:
    try:
        sess = ort_session(path, threads, level)
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


def tflite_interpreter(path: str, runtime: str, threads: int) -> Any:
    """An allocated TFLite Interpreter of `runtime`; ModelLoadError in plain words if it refuses the file."""
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


def tflite_buckets(interp: Any) -> dict[int, str]:
    """{seq_len: signature name} of a bucketed file; {} for a plain single-signature file."""
    out = {}
    for name in interp.get_signature_list():
        tail = name[len(SIGNATURE_PREFIX):]
        if name.startswith(SIGNATURE_PREFIX) and tail.isdigit():
            out[int(tail)] = name
    return out


def _dequantize(result: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if detail["dtype"] != np.float32:  # full-integer models: dequantise the logits
        scale, zero = detail["quantization"]
        result = (result.astype(np.float32) - zero) * scale
    return np.array(result, dtype=np.float32)


def _open_tflite_buckets(path: str, runtime: str, interp: Any, buckets: dict[int, str]) -> EdgeModel:
    """One runner per bucket signature; the call's padded width selects the runner."""
    runners: dict[int, tuple[Any, dict[str, Any], str, dict[str, Any]]] = {}
    fixed_batch = None
    for seq, name in buckets.items():
        runner = interp.get_signature_runner(name)
        ins = runner.get_input_details()
        outs = runner.get_output_details()
        out_name = "logits" if "logits" in outs else sorted(outs)[0]
        runners[seq] = (runner, ins, out_name, outs[out_name])
        fixed_batch = int(next(iter(ins.values()))["shape"][0])
    roles = {seq: {n: _input_role(n, i) for i, n in enumerate(r[1])} for seq, r in runners.items()}

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        seq = feeds["input_ids"].shape[-1]
        if seq not in runners:
            raise ValueError(f"{path}: no signature for width {seq}; buckets are {sorted(runners)}")
        runner, ins, out_name, out_detail = runners[seq]
        result = runner(**{n: feeds[role].astype(ins[n]["dtype"]) for n, role in roles[seq].items()})[out_name]
        return _dequantize(result, out_detail)

    return EdgeModel(path, runtime, None, fixed_batch, run, tuple(sorted(runners)))


def _open_tflite(path: str, runtime: str, threads: int) -> EdgeModel:
    interp = tflite_interpreter(path, runtime, threads)
    buckets = tflite_buckets(interp)
    if buckets:
        return _open_tflite_buckets(path, runtime, interp, buckets)
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
        return _dequantize(interp.get_tensor(out["index"]), out)

    return EdgeModel(path, runtime, fixed_seq, fixed_batch, run)


def open_model(path: str, runtime: str | None = None, threads: int = 2, ort_level: str | None = None) -> EdgeModel:
    """Load a .onnx or .tflite file with the given (or best available) runtime; `ort_level` sets
    ONNX Runtime's graph optimisation level (None: its default)."""
    _check_file(path)
    if runtime is None and path.endswith(".tflite"):
        return _open_tflite_any(path, threads)
    rt = runtime_for(path, runtime)
    problem = runtime_available(rt)
    if problem:
        raise ModelLoadError(problem)
    if rt == "onnxruntime":
        return _open_onnx(path, threads, ort_level)
    return _open_tflite(path, rt, threads)


def _open_tflite_any(path: str, threads: int) -> EdgeModel:
    """The first interpreter (in TFLITE_RUNTIMES order) that can run the file's ops."""
    reasons, tried = [], False
    for rt in TFLITE_RUNTIMES:
        why = runtime_available(rt)
        if why:
            reasons.append(why)
            continue
        tried = True
        try:
            return _open_tflite(path, rt, threads)
        except ModelLoadError as err:
            reasons.append(str(err))
    if not tried:
        raise _no_tflite_interpreter(reasons)
    raise ModelLoadError("; ".join(reasons))


_OP_VERSION = re.compile(r"opcode '?(\w+)'? version '?(\d+)'?", re.IGNORECASE)


def _plain_reason(runtime: str, msg: str) -> str:
    """Say in plain words why a runtime refused a file, keeping its own message in brackets."""
    low = msg.lower()
    found = _OP_VERSION.search(msg)
    if found and runtime != "onnxruntime":  # e.g. tflite-runtime 2.14 on a litert-torch file
        return (f"{runtime} does not support an op in this file: op {found.group(1)} version {found.group(2)} is newer than "
                f"this interpreter knows (litert-torch writes newer op versions); open it with ai-edge-litert ({msg})")
    if "op" in low and any(
        w in low for w in ("version", "registration", "unsupported", "unresolved", "not a registered", "not implemented")
    ):
        hint = (
            "; a newer interpreter (ai-edge-litert) may"
            if runtime != "onnxruntime"
            else "; export without custom ops or use a build that has it"
        )
        return f"{runtime} does not support an op in this file ({msg}){hint}"
    if any(w in low for w in ("protobuf parsing failed", "not a valid flatbuffer", "invalid_protobuf", "truncated", "corrupt")):
        return f"file is corrupt or truncated: {runtime} cannot parse it ({msg})"
    return f"{runtime} cannot load it ({msg})"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
