"""The benchmark harness behind both the `benchmark` stage and `albert-edge bench`.

Every (model file, runtime) is measured in its own fresh child process (benchmarks/measure.py),
one at a time, on the device asked for; each child prints one JSON line that becomes one
stamped row per (batch, sequence length) in `results.jsonl`. Devices without Python (adb) run
LiteRT's benchmark_model instead. Rows whose coefficient of variation is over the threshold are
flagged `noisy`; an int8 file slower than its fp32 twin on the same device is flagged too.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.data import EVAL_NPZ, encoded_to_npz
from albert_edge.registry import stage
from albert_edge.schema import require
from benchmarks.devices.base import PAYLOAD_FILES, Device, DeviceError, full_stamp, get_device, parse_spec
from benchmarks.provenance import artifact_key, run_stamp

SCHEMA = 1
RESULTS = "results.jsonl"
RUNTIMES = ("onnxruntime", "litert", "tflite-runtime", "torch")
FORMAT_RUNTIMES = {"onnx": ("onnxruntime",), "tflite": ("litert", "tflite-runtime"), "torch": ("torch",)}


@dataclass(frozen=True)
class BenchConfig:
    """Where and how to measure every model file of a bundle."""

    devices: tuple[str, ...] = ("local",)
    threads: tuple[int, ...] = (2,)
    runs: int = 50  # at least this many timed runs after warm-up (benchmark_model: --num_runs)
    min_secs: float = 1.0  # and at least this long (benchmark_model: --min_secs)
    max_secs: float = 150.0
    warmup: int = 1
    warmup_min_secs: float = 0.5
    seq_lens: tuple[int, ...] = (128,)
    batch_sizes: tuple[int, ...] = (1,)
    runtimes: tuple[str, ...] = RUNTIMES
    include: tuple[str, ...] = ("*",)  # globs over variant names
    accuracy: bool = True
    accuracy_seq_lens: tuple[int, ...] = (128,)
    real_lengths: bool = True  # also time batch 1 over the eval rows at their real lengths
    cv_threshold: float = 0.15
    benchmark_model: str | None = None  # adb: path of benchmark_model on the host or device
    timeout_s: float = 900.0

    def check(self) -> None:
        require(len(self.devices) > 0, "devices", "no device to run on", "use [local]")
        for d in self.devices:
            try:
                parse_spec(d)
            except ValueError as err:
                require(False, "devices", str(err))
        require(all(t >= 1 for t in self.threads), "threads", "thread counts must be >= 1")
        require(self.runs >= 1, "runs", f"{self.runs}: need at least one timed run")
        require(self.warmup >= 0, "warmup", "warm-up runs cannot be negative")
        require(0 <= self.min_secs <= self.max_secs, "min_secs", "min_secs must be between 0 and max_secs")
        require(all(8 <= s <= 4096 for s in self.seq_lens), "seq_lens", "sequence lengths must be 8..4096")
        require(all(b >= 1 for b in self.batch_sizes), "batch_sizes", "batch sizes must be >= 1")
        bad = [r for r in self.runtimes if r not in RUNTIMES]
        require(not bad, "runtimes", f"unknown runtime(s) {bad}", f"choose from {', '.join(RUNTIMES)}")
        require(0 < self.cv_threshold < 10, "cv_threshold", "a coefficient of variation such as 0.15")


# ---------------------------------------------------------------- bundle discovery


@dataclass
class Target:
    """One thing a child process measures: a variant (one file, or the bucket files of one
    variant), or the PyTorch model directory."""

    name: str
    format: str  # onnx | tflite | torch
    precision: str
    files: list[Path]
    seq_lens: list[int | None]
    meta: dict[str, Any]
    _gzip: int | None = None

    @property
    def size_bytes(self) -> int:
        return sum(_tree_size(p) for p in self.files)

    @property
    def gzip_bytes(self) -> int:
        if self._gzip is None:
            self._gzip = gzip_size(self.files)
        return self._gzip


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json")


def _payload(p: Path) -> list[Path]:
    """The files that make up a model: the file itself, or a model directory's weights and
    config (not its tokenizer files, which every format ships alike)."""
    if not p.is_dir():
        return [p]
    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES and not f.name.startswith(("tokenizer", "special_tokens")))


def _tree_size(p: Path) -> int:
    return sum(f.stat().st_size for f in _payload(p))


def gzip_size(paths: list[Path]) -> int:
    """Bytes after gzip -6 (what an app store download or OTA update roughly costs)."""
    total = 0
    for p in paths:
        for f in _payload(p):
            comp = zlib.compressobj(6, zlib.DEFLATED, 31)
            n = 0
            with f.open("rb") as fh:
                for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                    n += len(comp.compress(block))
            total += n + len(comp.flush())
    return total


def find_bundle(path: Path) -> Path:
    """A bundle directory (holds metadata.json or model files) given it, its artifact, or a run dir."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such bundle or run directory")
    for cand in (path, path / "bundle"):
        if (cand / "metadata.json").is_file():
            return cand
    summary = path / "summary.json"
    if summary.is_file():
        for step in reversed(json.loads(summary.read_text()).get("steps", [])):
            art = step.get("artifact")
            if art and step.get("stage") == "bundle":
                return find_bundle(Path(art))
        raise FileNotFoundError(f"{path}: the run has no bundle step; add `bundle` to the pipeline")
    if any(path.rglob("*.onnx")) or any(path.rglob("*.tflite")):
        return path
    raise FileNotFoundError(f"{path}: no metadata.json and no .onnx/.tflite files here")


def _bucket_base(name: str) -> str:
    return re.sub(r"[-_.]?(s|seq|len)?\d+$", "", name)


def bundle_targets(bundle: Path) -> list[Target]:
    """Model files listed in metadata.json (`variants`, or `models`), else every .onnx/.tflite.
    Fixed-shape files of one variant that differ only in sequence length form one target."""
    meta_path = bundle / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    entries = meta.get("variants") or meta.get("models") or []
    if not entries:
        entries = [
            {"name": p.stem, "file": str(p.relative_to(bundle)), "format": p.suffix.lstrip("."), "precision": _guess_precision(p.stem)}
            for p in sorted(bundle.rglob("*")) if p.suffix in (".onnx", ".tflite")
        ]
    groups: dict[tuple[str, str, str], Target] = {}
    for e in entries:
        fmt = e.get("format") or Path(e["file"]).suffix.lstrip(".")
        prec = e.get("precision") or _guess_precision(e.get("name", ""))
        seq = e.get("seq_len")
        name = e.get("group") or (_bucket_base(e.get("name", Path(e["file"]).stem)) if seq else e.get("name", Path(e["file"]).stem))
        key = (fmt, prec, name)
        t = groups.setdefault(key, Target(name, fmt, prec, [], [], {k: v for k, v in e.items() if k not in ("file", "seq_len", "sha256")}))
        t.files.append(bundle / e["file"])
        t.seq_lens.append(seq)
    return list(groups.values())


def _guess_precision(stem: str) -> str:
    s = stem.lower()
    for p in ("int8-dynamic", "int8-static", "int8-full", "fp16", "int8"):
        if p in s or p.replace("-", "_") in s:
            return p
    return "fp32"


# ---------------------------------------------------------------- eval inputs


def synthetic_npz(path: Path, rows: int = 8, width: int = 128, vocab: int = 30000, seed: int = 0) -> Path:
    """Random token ids (latency and memory only: no labels, so no accuracy)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(rows, width), dtype=np.int64)
    np.savez(path, input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids), lengths=np.full(rows, width, dtype=np.int64))
    return path


# ---------------------------------------------------------------- running


def _stage_dir(targets: list[Target], inputs: Path, work: Path) -> dict[str, str]:
    """Lay out what a device needs (measure.py, edge_runtime.py, inputs, model files); return
    target name -> path of each file relative to `work`."""
    for f in PAYLOAD_FILES:
        shutil.copy2(f, work / f.name)
    shutil.copy2(inputs, work / "inputs.npz")
    rel: dict[str, str] = {}
    for ti, t in enumerate(targets):
        for fi, f in enumerate(t.files):
            dest = work / "models" / f"{ti}-{fi}-{f.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            if f.is_dir():
                shutil.copytree(f, dest)
            else:
                try:
                    os.link(f, dest)
                except OSError:
                    shutil.copy2(f, dest)
            rel[f"{ti}/{fi}"] = str(dest.relative_to(work))
    return rel


def measure_args(model_paths: list[str], runtime: str, threads: int, cfg: BenchConfig, inputs: str, buckets: list[int] | None = None) -> list[str]:
    """Command line of one measure.py child (after the script path)."""
    args = [a for p in model_paths for a in ("--model", p)]
    args += ["--runtime", runtime, "--threads", str(threads), "--inputs", inputs]
    args += ["--runs", str(cfg.runs), "--min-secs", str(cfg.min_secs), "--max-secs", str(cfg.max_secs)]
    args += ["--warmup", str(cfg.warmup), "--warmup-min-secs", str(cfg.warmup_min_secs)]
    args += [a for b in cfg.batch_sizes for a in ("--batch", str(b))]
    args += [a for s in cfg.seq_lens for a in ("--seq-len", str(s))]
    if cfg.real_lengths:
        args.append("--real-lengths")
    if cfg.accuracy:
        args += ["--accuracy", *[a for s in cfg.accuracy_seq_lens for a in ("--accuracy-seq-len", str(s))]]
    return args


def _accuracy(preds: list[int] | None, labels: np.ndarray | None, teacher: np.ndarray | None) -> tuple[float | None, float | None]:
    if preds is None or labels is None or len(preds) != len(labels):
        return None, None
    p = np.asarray(preds)
    acc = float((p == labels).mean())
    agr = float((p == teacher).mean()) if teacher is not None and len(teacher) == len(p) else None
    return acc, agr


def correct_string(preds: list[int] | None, labels: np.ndarray | None) -> str | None:
    """Per-row correctness as "0"/"1" characters in eval order: what a paired interval between
    two files measured on the same rows needs (872 characters for SST-2 dev)."""
    if preds is None or labels is None or len(preds) != len(labels):
        return None
    return "".join("1" if p == y else "0" for p, y in zip(preds, np.asarray(labels).tolist()))


def rows_from_child(child: dict[str, Any], target: Target, device_stamp: dict[str, Any], data: dict[str, np.ndarray], extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Turn one child's JSON into stamped rows, one per (batch, seq_len); one error row if it failed."""
    labels = data.get("labels")
    teacher = data.get("teacher_preds")
    acc, agr = _accuracy(child.get("preds_real"), labels, teacher)
    fixed = {k: _accuracy(v, labels, teacher) for k, v in (child.get("preds_fixed") or {}).items()}
    base = {
        "schema": SCHEMA, "variant": target.name, "format": target.format, "precision": target.precision,
        "files": [f.name for f in target.files], "seq_buckets": child.get("buckets") or [s for s in target.seq_lens if s], "runtime": child.get("runtime"),
        "runtime_version": child.get("runtime_version"), "threads": child.get("threads"), "device": device_stamp.get("device"),
        "stamp": device_stamp, "emulated": bool(device_stamp.get("emulated")), "size_bytes": target.size_bytes, "gzip_bytes": target.gzip_bytes,
        "load_ms": child.get("load_ms"), "rss_baseline_mb": child.get("rss_baseline_mb"), "rss_peak_mb": child.get("rss_peak_mb"),
        "rss_growth_mb": child.get("rss_growth_mb"), "accuracy": acc, "agreement": agr, "correct_real": correct_string(child.get("preds_real"), labels),
        "accuracy_fixed": {k: v[0] for k, v in fixed.items()}, "agreement_fixed": {k: v[1] for k, v in fixed.items()},
        "source": child.get("source", "measure.py"), "error": child.get("error"), **extra,
    }
    if not child.get("ok"):
        return [dict(base, batch=None, seq_len=None)]
    return [dict(base, **{k: v for k, v in lat.items()}) for lat in child.get("latency", [])] or [dict(base, batch=None, seq_len=None)]


def parse_child_output(rc: int, stdout: str, stderr: str) -> dict[str, Any]:
    """The last JSON line of a child's stdout, or an error record that says what happened."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    tail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {"ok": False, "error": f"child exited {rc}: {tail}"}


def run_on_device(device: Device, targets: list[Target], inputs: Path, cfg: BenchConfig, extra: dict[str, Any], log: Any = None) -> list[dict[str, Any]]:
    """Measure every target with every runtime that fits its format, sequentially, one child each."""
    data = dict(np.load(inputs))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="albert-edge-bench-") as tmp:
        work = Path(tmp)
        rel = _stage_dir(targets, inputs, work)
        remote = device.push(work)
        stamp_cache: dict[str, Any] | None = None
        for ti, t in enumerate(targets):
            runtimes = [r for r in FORMAT_RUNTIMES.get(t.format, ()) if r in cfg.runtimes]
            paths = [f"{remote}/{rel[f'{ti}/{fi}']}" for fi in range(len(t.files))]
            for rt in runtimes:
                for threads in cfg.threads:
                    try:
                        if not device.python:
                            child = _native_benchmark(device, t, paths, rt, threads, cfg)
                        else:
                            rc, out, err = device.run_python([f"{remote}/measure.py", *measure_args(paths, rt, threads, cfg, f"{remote}/inputs.npz")], cfg.timeout_s)
                            child = parse_child_output(rc, out, err)
                    except DeviceError as err:
                        # a dropped connection or a timeout: keep what was measured, say what was lost
                        child = {"ok": False, "runtime": rt, "threads": threads, "error": f"device error: {err}"}
                        rows.extend(rows_from_child(child, t, full_stamp(device, stamp_cache), data, extra))
                        if log is not None:
                            log.error("  %s: %s; keeping the %d row(s) measured before it", device.name, err, len(rows) - 1)
                        return rows
                    stamp_cache = full_stamp(device, child.get("stamp") or stamp_cache)
                    new = rows_from_child(child, t, stamp_cache, data, extra)
                    rows.extend(new)
                    if log is not None:
                        log.info("  %s", describe_row(new[0]))
    return rows


def _native_benchmark(device: Device, t: Target, paths: list[str], runtime: str, threads: int, cfg: BenchConfig) -> dict[str, Any]:
    """Devices without Python: LiteRT's benchmark_model per .tflite file (no accuracy there)."""
    bench = getattr(device, "benchmark_model", None)
    if t.format != "tflite" or runtime != "litert" or bench is None:
        return {"ok": False, "runtime": runtime, "threads": threads, "error": f"{device.name} runs only .tflite files through benchmark_model"}
    latency = []
    child: dict[str, Any] = {"ok": True, "runtime": "benchmark_model", "threads": threads, "source": "benchmark_model"}
    for path, seq in zip(paths, t.seq_lens):
        res = bench(path, threads=threads, runs=cfg.runs, warmup=cfg.warmup, min_secs=cfg.min_secs, timeout=cfg.timeout_s)
        if not res.get("ok"):
            return {**child, "ok": False, "error": res.get("error")}
        child.update({k: res[k] for k in ("load_ms", "rss_peak_mb", "rss_growth_mb", "runtime_version") if res.get(k) is not None})
        latency.append({"batch": 1, "seq_len": seq, "run_seq_len": seq, **{k: v for k, v in res.items() if k.endswith("_ms") and k != "load_ms"}, "runs": res.get("runs"), "cv": res.get("cv")})
    child["latency"] = latency
    return child


# ---------------------------------------------------------------- flags and output


def flag_rows(rows: list[dict[str, Any]], cv_threshold: float) -> list[dict[str, Any]]:
    """Add `flags`: noisy (cv over threshold), int8-slower-than-fp32 (vs its fp32 twin of the same
    format, runtime, device, threads, batch and length), emulated, random-weights, error."""
    def twin_key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r.get("device"), r.get("format"), r.get("runtime"), r.get("threads"), r.get("batch"), r.get("seq_len"), tuple(r.get("seq_buckets") or ()))

    fp32 = {twin_key(r): r for r in rows if r.get("precision") == "fp32" and r.get("p50_ms")}
    for r in rows:
        flags = set(r.get("flags") or ())
        cv = r.get("cv")
        # over real lengths the spread is the inputs' spread, not noise
        if cv is not None and cv > cv_threshold and r.get("seq_len") != "real":
            flags.add("noisy")
        if r.get("emulated"):
            flags.add("emulated")
        if r.get("random_weights"):
            flags.add("random-weights")
        if r.get("error"):
            flags.add("error")
        twin = fp32.get(twin_key(r))
        if str(r.get("precision", "")).startswith("int8") and twin and r.get("p50_ms"):
            r["speedup_vs_fp32"] = twin["p50_ms"] / r["p50_ms"]
            if r["p50_ms"] > twin["p50_ms"]:
                flags.add("int8-slower-than-fp32")
        r["flags"] = sorted(flags)
    return rows


def write_results(rows: list[dict[str, Any]], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / RESULTS
    with path.open("w") as fh:
        for r in rows:
            fh.write(json.dumps(r, sort_keys=True, default=str) + "\n")
    return path


def read_results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def describe_row(r: dict[str, Any]) -> str:
    if r.get("error"):
        return f"{r['variant']:24s} {r.get('runtime') or '-':14s} {r['error']}"
    acc = f"acc {100 * r['accuracy']:.2f}%" if r.get("accuracy") is not None else ""
    return (f"{r['variant']:24s} {r['runtime']:14s} b{r['batch']} s{r['seq_len']} p50 {r['p50_ms']:.2f} ms "
            f"p90 {r['p90_ms']:.2f} cv {r['cv']:.2f} peak {r.get('rss_peak_mb') or 0:.0f} MB {acc}")


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if not r.get("error")]
    best = min(ok, key=lambda r: r["p50_ms"], default=None)
    return {
        "rows": len(rows), "errors": len(rows) - len(ok), "noisy": sum("noisy" in r.get("flags", ()) for r in rows),
        "int8_slower": sum("int8-slower-than-fp32" in r.get("flags", ()) for r in rows),
        "fastest": None if best is None else {"variant": best["variant"], "runtime": best["runtime"], "p50_ms": best["p50_ms"]},
    }


def benchmark(targets: list[Target], inputs: Path, cfg: BenchConfig, extra: dict[str, Any], log: Any = None, device_options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every target on every device of the config; rows flagged."""
    targets = [t for t in targets if any(fnmatch.fnmatch(t.name, g) for g in cfg.include)]
    rows: list[dict[str, Any]] = []
    for spec in cfg.devices:
        try:
            device = get_device(spec, **(device_options or {}))
        except DeviceError as err:  # one unreachable device must not cost the others' rows
            if log is not None:
                log.error("  %s: %s", spec, err)
            data = dict(np.load(inputs))
            child = {"ok": False, "runtime": None, "threads": None, "error": f"device unavailable: {err}"}
            rows += [r for t in targets for r in rows_from_child(child, t, {"device": spec}, data, extra)]
            continue
        try:
            rows += run_on_device(device, targets, inputs, cfg, extra, log)
        finally:
            device.close()
    return flag_rows(rows, cfg.cv_threshold)


# ---------------------------------------------------------------- the stage


@stage("benchmark", config=BenchConfig, version="1", inputs=("bundle", "?teacher", "?model"), output="bench")
def benchmark_stage(ctx: Any) -> dict[str, Any]:
    """Latency, load time, peak memory, size and accuracy of every bundle file on each device."""
    from albert_edge.runner import StageError

    cfg: BenchConfig = ctx.config
    bundle = find_bundle(ctx.inputs["bundle"].path)
    targets = bundle_targets(bundle)
    model_art = ctx.inputs.get("model")
    if "torch" in cfg.runtimes and model_art is not None and model_art.model_dir.is_dir():
        targets.append(Target("torch-eager", "torch", "fp32", [model_art.model_dir], [None], {}))
    if not targets:
        raise StageError(f"{bundle}: no model files to benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = stage_inputs(ctx, bundle, model_art, Path(tmp) / "inputs.npz")
        keys = {role: a.key for role, a in ctx.inputs.items() if a is not None and not isinstance(a, list)}
        extra = {"artifact": ctx.inputs["bundle"].step, "random_weights": bool(ctx.pipeline.random_weights), **run_stamp(ctx.pipeline, keys)}
        try:
            rows = benchmark(targets, inputs, cfg, extra, ctx.log, {"benchmark_model": cfg.benchmark_model})
        except DeviceError as err:
            raise StageError(str(err)) from None
    for r in rows:
        r["teacher_accuracy"] = ctx.teacher_accuracy
    write_results(rows, ctx.out_dir)
    ctx.info["results"] = RESULTS
    return summarise(rows)


def stage_inputs(ctx: Any, bundle: Path, model_art: Any, dest: Path) -> Path:
    """The bundle's eval.npz, else the pipeline's eval split tokenised with the bundle's (or the
    exported model's) tokenizer, with the teacher's predictions for agreement."""
    from albert_edge.data import encode, read_examples
    from albert_edge.metrics import load_predictions

    if (bundle / EVAL_NPZ).is_file():
        shutil.copy2(bundle / EVAL_NPZ, dest)
        return dest
    tok_dir = next((p.parent for p in sorted(bundle.rglob("tokenizer_config.json"))), None)
    if tok_dir is None and model_art is not None:
        tok_dir = model_art.model_dir
    if tok_dir is None:
        ctx.log.info("  no tokenizer in the bundle: timing random token ids, no accuracy")
        return synthetic_npz(dest, width=max(ctx.config.seq_lens))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    enc = encode(tok, read_examples(ctx.pipeline.task, "eval"), ctx.pipeline.task.max_seq_len)
    teacher = ctx.teacher
    preds = load_predictions(teacher.path if teacher is not None else None)
    return encoded_to_npz(enc.input_ids, enc.token_type_ids, enc.labels, dest, preds)


# ---------------------------------------------------------------- the CLI


def cli_bench(args: Any) -> int:
    """`albert-edge bench BUNDLE --device ...`: 0 ok, 1 every row failed, 2 bad input."""
    import sys

    try:
        bundle = find_bundle(args.bundle)
        cfg = BenchConfig(
            devices=(args.device,), threads=(args.threads,), runs=args.runs, warmup=args.warmup,
            seq_lens=tuple(args.seq_len or (128,)),
            runtimes=tuple(r.strip() for r in args.runtimes.split(",") if r.strip()) or RUNTIMES,
            benchmark_model=args.benchmark_model,
        )
        from albert_edge.schema import build

        cfg = build(BenchConfig, _config_dict(cfg), "bench")
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    targets = bundle_targets(bundle)
    if not targets:
        print(f"error: {bundle}: no model files", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else bundle.parent / "bench"
    with tempfile.TemporaryDirectory() as tmp:
        if (bundle / EVAL_NPZ).is_file():
            inputs = bundle / EVAL_NPZ
        else:
            print(f"note: no {EVAL_NPZ} in {bundle}: timing random token ids, no accuracy", file=sys.stderr)
            inputs = synthetic_npz(Path(tmp) / "inputs.npz", width=max(cfg.seq_lens))
        meta = _read_json(bundle / "metadata.json")
        key, pipeline = artifact_key(bundle)
        extra = {"artifact": bundle.name, "random_weights": bool(meta.get("random_weights")), **run_stamp(None, {"bundle": key}, pipeline)}
        try:
            rows = benchmark(targets, inputs, cfg, extra, None, {"benchmark_model": cfg.benchmark_model})
        except DeviceError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    path = write_results(rows, out)
    for r in rows:
        print(describe_row(r))
    print(f"{len(rows)} rows -> {path}")
    return 1 if rows and all(r.get("error") for r in rows) else 0


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    from albert_edge.schema import to_dict

    return to_dict(cfg)


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


__all__ = [
    "BenchConfig", "Target", "benchmark", "bundle_targets", "cli_bench", "correct_string", "encoded_to_npz", "find_bundle", "flag_rows",
    "gzip_size", "measure_args", "parse_child_output", "read_results", "rows_from_child", "run_on_device", "write_results",
]
