"""Measure ONE model (or one set of sequence-length buckets) in this process; print one JSON line.

Why a process per model: runtimes keep spinning thread pools that slow the next runtime in the
same process (~2x), and peak memory can never be reset, so it is only attributable when the
process loaded nothing else. The benchmark (benchmarks/measure.py, on every device) and the
export stage's ORT-level timing both run this in a fresh process.

    python -m edge_runtime.measure --model m.onnx --runtime onnxruntime --threads 2 --inputs inputs.npz \
        --batch 1 --seq-len 128 --runs 50 --warmup 1 [--ort-level basic]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.memory import current_rss_mb, peak_rss_mb
from edge_runtime.models import ORT_LEVELS, RUNTIME_MODULES, open_model, pick_bucket, runtime_available, runtime_version
from edge_runtime.timing import latency_stats, timed_runs

MAX_STORED_TIMES = 2000  # per-run latencies kept in a row (for distributions)
Runner = Callable[..., np.ndarray]


@dataclass(frozen=True)
class ExtraRuntime:
    """A runtime this package does not open itself (the host's PyTorch reference), plugged in by the caller."""

    problem: Callable[[], str]  # '' if usable here, else why not
    prepare: Callable[[str], None]  # imports to finish before the memory baseline
    open: Callable[[str, int], Runner]  # (model path, threads) -> runner(ids, mask, token_type_ids)


def synthetic_npz(path: Path, rows: int = 8, width: int = 128, vocab: int = 30000, seed: int = 0) -> Path:
    """Random token ids (latency and memory only: no labels, so no accuracy)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(rows, width), dtype=np.int64)
    np.savez(
        path,
        input_ids=ids,
        attention_mask=np.ones_like(ids),
        token_type_ids=np.zeros_like(ids),
        lengths=np.full(rows, width, dtype=np.int64),
    )
    return path


class Model:
    """One variant behind one call per width: a dynamic file, a bucketed file (one signature per
    sequence length), or separate fixed-length files of one variant."""

    def __init__(
        self, paths: list[str], runtime: str, threads: int, extra: ExtraRuntime | None = None, ort_level: str | None = None
    ) -> None:
        self.runtime = runtime
        self.by_seq: dict[int | None, Runner] = {}
        if extra is not None:
            self.by_seq[None] = extra.open(paths[0], threads)
            return
        for p in paths:
            m = open_model(p, runtime, threads, ort_level=ort_level)
            if getattr(m, "buckets", ()):
                for b in m.buckets:
                    self.by_seq[b] = _exact_width(m)
            else:
                self.by_seq[m.fixed_seq_len] = m

    @property
    def buckets(self) -> list[int]:
        return sorted(s for s in self.by_seq if s is not None)

    def for_length(self, length: int) -> tuple[Runner, int]:
        """The runner that serves `length` tokens and the width it runs at (the smallest bucket
        that holds them, the largest if none does; dynamic files run at `length`)."""
        if None in self.by_seq:
            return self.by_seq[None], length
        seq = pick_bucket(length, self.buckets)
        return self.by_seq[seq], seq


def _exact_width(m: Any) -> Runner:
    """Run a bucketed EdgeModel at exactly the width of the arrays given (EdgeModel itself picks
    the bucket from the real length, which would time a short row at a small bucket)."""

    def call(ids: np.ndarray, mask: np.ndarray, tt: np.ndarray) -> np.ndarray:
        rows = range(ids.shape[0]) if m.fixed_batch and ids.shape[0] != m.fixed_batch else [None]
        outs = [m.run({"input_ids": ids[sl], "attention_mask": mask[sl], "token_type_ids": tt[sl]})
                for sl in ([slice(i, i + 1) for i in rows] if rows != [None] else [slice(None)])]
        return np.concatenate(outs, axis=0)

    return call


def _batch(data: dict[str, np.ndarray], rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of the tokenised eval set padded (pad id 0 / mask 0) or truncated to `width`."""
    out = []
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        arr = data[key][rows]
        if arr.shape[1] >= width:
            arr = arr[:, :width]
        else:
            arr = np.concatenate([arr, np.zeros((arr.shape[0], width - arr.shape[1]), dtype=arr.dtype)], axis=1)
        out.append(np.ascontiguousarray(arr, dtype=np.int64))
    return out[0], out[1], out[2]


def _full_batch(data: dict[str, np.ndarray], rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eval rows' real tokens repeated to fill `width` (mask all ones): timing at width N means
    N real tokens, so no runtime can shortcut the padding and bucketed files run bucket N."""
    ids = np.zeros((len(rows), width), dtype=np.int64)
    tt = np.zeros((len(rows), width), dtype=np.int64)
    for r, i in enumerate(rows):
        n = max(int(data["lengths"][i]), 1)
        ids[r] = np.resize(data["input_ids"][i, :n], width)
        tt[r] = np.resize(data["token_type_ids"][i, :n], width)
    return ids, np.ones_like(ids), tt


def measure_latency(model: Model, data: dict[str, np.ndarray], batch: int, seq_len: int, args: argparse.Namespace) -> dict[str, Any]:
    """First inference, warm-up, then timed runs of one (batch, seq_len) shape."""
    n = data["input_ids"].shape[0]
    rows = np.arange(batch) % n
    fn, width = model.for_length(seq_len)
    ids, mask, tt = _full_batch(data, rows, width)
    t0 = time.perf_counter()
    fn(ids, mask, tt)
    first_ms = (time.perf_counter() - t0) * 1000.0
    warm = timed_runs(lambda: fn(ids, mask, tt), args.warmup, args.warmup_min_secs, max(args.warmup_min_secs, 0.0) + 60.0)
    times = timed_runs(lambda: fn(ids, mask, tt), args.runs, args.min_secs, args.max_secs)
    stats = latency_stats(times)
    return {
        "batch": batch, "seq_len": seq_len, "run_seq_len": width, "first_ms": first_ms,
        "warmup_runs": len(warm), "warmup_mean_ms": float(np.mean(warm)) if warm else None,
        "runs": len(times), **stats, "throughput_per_s": 1000.0 * batch / stats["mean_ms"],
        "times_ms": [round(t, 4) for t in times[:MAX_STORED_TIMES]],
    }


def measure_real_lengths(model: Model, data: dict[str, np.ndarray], args: argparse.Namespace) -> dict[str, Any]:
    """Batch-1 latency over the eval rows at their real tokenised lengths (through the buckets for
    fixed-shape files), cycling through the rows: what an app sees on real inputs."""
    n = data["input_ids"].shape[0]
    calls = []
    for i in range(n):
        fn, width = model.for_length(max(int(data["lengths"][i]), 1))
        calls.append((fn, _batch(data, np.array([i]), width)))
    t0 = time.perf_counter()
    calls[0][0](*calls[0][1])
    first_ms = (time.perf_counter() - t0) * 1000.0
    for fn, feeds in calls[: max(1, args.warmup)]:
        fn(*feeds)
    times: list[float] = []
    start = time.perf_counter()
    i = 0
    while True:
        fn, feeds = calls[i % n]
        t0 = time.perf_counter()
        fn(*feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
        i += 1
        elapsed = time.perf_counter() - start
        if (len(times) >= max(args.runs, min(n, 4 * args.runs)) and elapsed >= args.min_secs) or elapsed >= args.max_secs:
            break
    stats = latency_stats(times)
    return {
        "batch": 1,
        "seq_len": "real",
        "run_seq_len": float(np.mean(data["lengths"])),
        "first_ms": first_ms,
        "runs": len(times),
        **stats,
        "throughput_per_s": 1000.0 / stats["mean_ms"],
        "times_ms": [round(t, 4) for t in times[:MAX_STORED_TIMES]],
    }


def predict(model: Model, data: dict[str, np.ndarray], fixed: int | None) -> list[int]:
    """Batch-1 predictions over the eval set: each row at its real length (through the buckets),
    or padded to `fixed` tokens."""
    return [int(np.argmax(row)) for row in predict_logits(model, data, fixed)]


def predict_logits(model: Model, data: dict[str, np.ndarray], fixed: int | None) -> list[list[float]]:
    """Batch-1 logits over the eval set (what a comparison with another machine's run needs)."""
    lengths = data["lengths"]
    out = []
    for i in range(len(lengths)):
        fn, width = model.for_length(int(fixed or lengths[i]))
        ids, mask, tt = _batch(data, np.array([i]), width)
        out.append([float(x) for x in np.asarray(fn(ids, mask, tt)[0], dtype=np.float64).ravel()])
    return out


def measure(args: argparse.Namespace, extra: dict[str, ExtraRuntime] | None = None,
            stamp: Callable[[], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything for one model in this process, in the order that keeps memory attributable.
    `extra` opens runtimes this package does not (torch); `stamp` describes the machine."""
    result: dict[str, Any] = {"ok": False, "runtime": args.runtime, "models": args.model, "threads": args.threads}
    if args.ort_level:
        result["ort_level"] = args.ort_level
    if stamp is not None:
        result["stamp"] = stamp()
    plug = (extra or {}).get(args.runtime)
    problem = plug.problem() if plug else runtime_available(args.runtime)
    if problem:
        result["error"] = f"runtime unavailable: {problem}"
        return result
    importlib.import_module(RUNTIME_MODULES[args.runtime])
    if plug:
        plug.prepare(args.model[0])
    result["runtime_version"] = runtime_version(args.runtime)
    data = dict(np.load(args.inputs)) if args.inputs else {}
    gc.collect()
    # the import baseline: VmHWM with the runtime imported and the inputs read, no model yet;
    # growth over it is what the model costs, whatever the runtime's import weighs on this device
    baseline = peak_rss_mb()
    result["rss_baseline_mb"] = baseline
    t0 = time.perf_counter()
    try:
        model = Model(args.model, args.runtime, args.threads, plug, args.ort_level)
    except Exception as err:  # ModelLoadError and friends: a row that says why
        result["error"] = f"load failed: {str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__}"
        return result
    result["load_ms"] = (time.perf_counter() - t0) * 1000.0
    result["rss_after_load_mb"] = peak_rss_mb()
    result["buckets"] = model.buckets
    timed = data and not args.accuracy_only
    result["latency"] = [measure_latency(model, data, b, s, args) for s in args.seq_len for b in args.batch] if timed else []
    if timed and args.real_lengths and "lengths" in data:
        result["latency"].append(measure_real_lengths(model, data, args))
    if data and args.accuracy:
        logits = predict_logits(model, data, None)
        result["preds_real"] = [int(np.argmax(row)) for row in logits]
        result["logits_real"] = [[round(x, 6) for x in row] for row in logits]
        # a fixed width a bucketed file cannot run (over its largest bucket) is left out, not faked
        fixed = [] if args.no_fixed_accuracy else args.accuracy_seq_len
        result["preds_fixed"] = {str(f): predict(model, data, f) for f in fixed if not model.buckets or f <= max(model.buckets)}
    result["rss_peak_mb"] = peak_rss_mb()
    result["rss_current_mb"] = current_rss_mb()
    result["rss_growth_mb"] = result["rss_peak_mb"] - baseline
    result["ok"] = True
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stamp", action="store_true", help="print this machine's stamp and exit")
    p.add_argument("--model", action="append", default=[], help="model file (repeat for bucket files); torch: HF model dir")
    p.add_argument("--runtime", default="onnxruntime", choices=sorted(RUNTIME_MODULES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ort-level", default=None, choices=ORT_LEVELS, help="onnxruntime graph optimisation level (default: ORT's own)")
    p.add_argument("--inputs", default=None, help="npz: input_ids, attention_mask, token_type_ids [N, L], lengths [N]")
    p.add_argument("--batch", type=int, action="append", help="batch sizes to time (repeatable; default 1)")
    p.add_argument("--seq-len", type=int, action="append", help="sequence lengths to time (repeatable; default 128)")
    p.add_argument("--runs", type=int, default=50, help="at least this many timed runs")
    p.add_argument("--min-secs", type=float, default=1.0, help="and at least this long")
    p.add_argument("--max-secs", type=float, default=150.0, help="but never longer")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--warmup-min-secs", type=float, default=0.5)
    p.add_argument("--real-lengths", action="store_true", help="also time batch 1 over the eval rows at their real lengths")
    p.add_argument("--accuracy", action="store_true", help="also predict every eval row (real lengths and fixed)")
    p.add_argument("--accuracy-seq-len", type=int, action="append", help="fixed widths for accuracy (default 128)")
    p.add_argument("--accuracy-only", action="store_true", help="predict only, time nothing (a reference run on another machine)")
    p.add_argument("--no-fixed-accuracy", action="store_true", help="predict at real lengths only, not also padded to fixed widths")
    args = p.parse_args(argv)
    args.batch = args.batch or [1]
    args.seq_len = args.seq_len or [128]
    args.accuracy_seq_len = args.accuracy_seq_len or [128]
    if not args.stamp and not args.model:
        p.error("--model is required")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure without a machine stamp or plugged-in runtimes: the export stage's timing child."""
    args = parse_args(argv)
    if args.stamp:
        print("--stamp: run benchmarks/measure.py, which knows the machine", file=sys.stderr)
        return 2
    result = measure(args)
    print(json.dumps(result))
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
