"""The benchmark's child process: measure ONE model (or one set of buckets) with a machine stamp; print one JSON line.

edge_runtime.measure does the measuring; this script adds what only the benchmark needs: the
machine's stamp (hoststamp.py) and the PyTorch reference runtime. It is shipped to devices with
hoststamp.py and the edge_runtime package beside it, and imports only those, numpy, the runtime
asked for, and (for `--runtime torch`) torch + transformers.

    python measure.py --model m.onnx --runtime onnxruntime --threads 2 --inputs inputs.npz \
        --batch 1 --seq-len 128 --runs 50 --warmup 1
    python measure.py --stamp
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.measure import ExtraRuntime, Runner, measure, parse_args

try:  # in the repo: the package; on a device: the file shipped beside this one
    from benchmarks.hoststamp import host_stamp
except ImportError:
    from hoststamp import host_stamp  # type: ignore[no-redef]


def platform_stamp() -> dict[str, Any]:
    """What this process can see of the machine it runs on (hoststamp.py owns what that is)."""
    return host_stamp()


def _open_torch(model_dir: str, threads: int) -> Runner:
    """PyTorch eager reference: the HF model directory of a model artifact."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    try:  # on the host, albert-edge's loader also rebuilds structurally pruned (sliced) models
        from albert_edge.models import load_model

        model = load_model(Path(model_dir))[0]
    except ImportError:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()

    def run(input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None) -> np.ndarray:
        with torch.inference_mode():
            feeds = {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)}
            if token_type_ids is not None:
                feeds["token_type_ids"] = torch.from_numpy(token_type_ids)
            return model(**feeds).logits.float().numpy()

    return run


def _import_model_class(model_dir: str) -> None:
    """transformers imports model classes lazily: import it before the baseline so that load
    time is loading, not importing."""
    transformers = importlib.import_module("transformers")
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as fh:
            archs = json.load(fh).get("architectures") or []
    except (OSError, ValueError):
        archs = []
    for arch in archs:
        getattr(transformers, arch, None)
    getattr(transformers, "AutoModelForSequenceClassification", None)


def _torch_problem() -> str:
    try:
        importlib.import_module("torch")
        importlib.import_module("transformers")
    except ImportError as err:
        return f"torch runtime needs torch and transformers ({err})"
    return ""


TORCH = ExtraRuntime(problem=_torch_problem, prepare=_import_model_class, open=_open_torch)


def _executorch_problem() -> str:
    try:
        importlib.import_module("executorch.runtime")
    except Exception as err:  # ImportError, or an extension built for another torch (OSError, undefined symbol)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        return f"executorch runtime does not load here ({type(err).__name__}: {first})"
    return ""


def _prepare_executorch(model_path: str) -> None:
    importlib.import_module("torch")
    importlib.import_module("executorch.runtime")


def _open_pte(path: str, threads: int) -> Runner:
    """An ExecuTorch program (.pte, e.g. XNNPACK-delegated) in ExecuTorch's own runtime. A file
    exported at a fixed sequence length gets its inputs padded or truncated to it, as a user must."""
    import torch
    from executorch.runtime import Runtime

    from edge_runtime.models import fit_length

    torch.set_num_threads(threads)
    try:  # XNNPACK's thread pool (sized to the machine's cores unless told)
        from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

        _unsafe_reset_threadpool(threads)
    except (ImportError, AttributeError, RuntimeError):
        pass
    method = Runtime.get().load_program(path).load_method("forward")
    # torch.export records a dynamic dim's upper bound as its size, so the file's name says whether
    # it is fixed-shape (benchmarks/peers' recipes end a fixed file's name in -s<width>.pte)
    named = re.search(r"-s(\d+)\.pte$", path)
    fixed = int(named.group(1)) if named else None

    def run(input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray | None = None) -> np.ndarray:
        tt = token_type_ids if token_type_ids is not None else np.zeros_like(input_ids)
        rows = []
        for i in range(input_ids.shape[0]):
            feeds = [a[i : i + 1] if fixed is None else fit_length(a[i : i + 1], fixed) for a in (input_ids, attention_mask, tt)]
            out = method.execute([torch.from_numpy(np.ascontiguousarray(f, dtype=np.int64)) for f in feeds])
            rows.append(out[0].detach().float().numpy())
        return np.concatenate(rows, axis=0)

    return run


EXECUTORCH = ExtraRuntime(problem=_executorch_problem, prepare=_prepare_executorch, open=_open_pte)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stamp:
        print(json.dumps(platform_stamp()))
        return 0
    result = measure(args, extra={"torch": TORCH, "executorch": EXECUTORCH}, stamp=platform_stamp)
    print(json.dumps(result))
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
