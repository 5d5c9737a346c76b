"""The benchmark harness behind both the `benchmark` stage (albert_edge.stages.benchmark) and `albert-edge bench`.

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
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.artifacts import sha256_file
from albert_edge.data import EVAL_NPZ, encoded_to_npz
from albert_edge.schema import require
from albert_edge.variant import ModelVariant
from benchmarks import device_suite, fidelity
from benchmarks.devices.base import Device, DeviceError, copy_payload, full_stamp, get_device, parse_spec
from benchmarks.devices.scratch import scratch_dir, sweep
from benchmarks.provenance import artifact_key, run_stamp
from edge_runtime.measure import synthetic_npz

SCHEMA = 1
RESULTS = "results.jsonl"
RUNTIMES = ("onnxruntime", "litert", "tflite-runtime", "torch")
# ExecuTorch runs .pte files, which only benchmarks/peers measures: a runtime one may ask for, not
# a default (the default is part of every benchmark step's cache key)
KNOWN_RUNTIMES = (*RUNTIMES, "executorch")
FORMAT_RUNTIMES = {"onnx": ("onnxruntime",), "tflite": ("litert", "tflite-runtime"), "torch": ("torch",), "pte": ("executorch",)}


@dataclass(frozen=True)
class BenchConfig:
    """Where and how to measure every model file of a bundle."""

    devices: tuple[str, ...] = ("local",)
    threads: tuple[int, ...] = (2,)  # in a pipeline, a step that sets none takes the pipeline's `threads`
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
    accuracy_rows: int | None = None  # eval rows predicted: None 200 under emulation and all elsewhere, 0 all
    accuracy_seed: int = 0  # which rows the sample holds
    host_reference: bool = True  # on other devices, also predict the same rows here and compare
    device_tests: bool = True  # run the bundle's golden-vector suite on every Python device
    real_lengths: bool = True  # also time batch 1 over the eval rows at their real lengths
    cv_threshold: float = 0.15
    benchmark_model: str | None = None  # adb: path of benchmark_model on the host or device
    timeout_s: float = 900.0  # per child (one file x runtime x threads); `bench --timeout` sets it

    def inherit_threads(self, threads: int) -> BenchConfig:
        """This config measuring at the pipeline's thread count (the step set none of its own)."""
        return replace(self, threads=(threads,))

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
        bad = [r for r in self.runtimes if r not in KNOWN_RUNTIMES]
        require(not bad, "runtimes", f"unknown runtime(s) {bad}", f"choose from {', '.join(KNOWN_RUNTIMES)}")
        require(0 < self.cv_threshold < 10, "cv_threshold", "a coefficient of variation such as 0.15")
        require(
            self.accuracy_rows is None or self.accuracy_rows >= 0, "accuracy_rows", f"{self.accuracy_rows}: a row count (0: every eval row)"
        )
        require(
            0 < self.timeout_s <= 86400,
            "timeout_s",
            f"{self.timeout_s}: a per-row timeout must be over 0 and at most 86400 seconds",
            "e.g. 900",
        )


# ---------------------------------------------------------------- bundle discovery


class BundleError(ValueError):
    """A bundle whose metadata.json cannot be trusted or read: the message names the file and entry."""


SKIPPED_PREFIXES = ("runtime unavailable",)  # error rows that say "not here", not "this file is bad"


@dataclass
class Target:
    """One thing a child process measures: a variant's model file, or the PyTorch model directory."""

    name: str
    format: str  # onnx | tflite | torch
    precision: str
    files: list[Path]
    meta: dict[str, Any]
    _gzip: int | None = None
    sha256: list[str | None] | None = None  # per file, from metadata.json (None: not recorded)
    problem: str | None = None  # set when a file must not be measured (e.g. sha256 mismatch)

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
    if not p.exists():
        return []
    if not p.is_dir():
        return [p]
    return sorted(
        f for f in p.iterdir() if f.is_file() and f.suffix in WEIGHT_SUFFIXES and not f.name.startswith(("tokenizer", "special_tokens"))
    )


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
        try:
            data = json.loads(summary.read_text(encoding="utf-8"))
        except ValueError as err:
            raise ValueError(f"{summary}: unreadable ({err})") from None
        steps = data.get("steps") if isinstance(data, dict) else None
        for step in reversed(steps if isinstance(steps, list) else []):
            art = step.get("artifact") if isinstance(step, dict) else None
            if isinstance(art, str) and art and step.get("stage") == "bundle":
                return find_bundle(Path(art))
        raise FileNotFoundError(f"{path}: the run has no bundle step; add `bundle` to the pipeline")
    if any(path.rglob("*.onnx")) or any(path.rglob("*.tflite")):
        return path
    raise FileNotFoundError(f"{path}: no metadata.json and no .onnx/.tflite files here")


def safe_file_name(name: object) -> bool:
    """A bundle file entry must be a plain file name: no separators, no `.`/`..`, not absolute."""
    return (
        isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
        and "\0" not in name and not any(ord(c) < 32 for c in name)
    )


def _read_metadata(meta_path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise BundleError(f"{meta_path}: not UTF-8 text (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise BundleError(f"{meta_path}: not valid JSON (line {err.lineno}: {err.msg}; truncated?)") from None
    except OSError as err:
        raise BundleError(f"{meta_path}: cannot read it ({err.strerror or err})") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _entry_path(bundle: Path, meta_path: Path, key: str, i: int, e: object) -> tuple[dict[str, Any], Path]:
    """Validate one metadata entry; its file must be a plain name of a regular file in the bundle,
    so nothing outside the bundle is ever staged or sent to a board."""
    where = f"{meta_path}: {key}[{i}]"
    if not isinstance(e, dict):
        raise BundleError(f"{where}: expected an object with `file`, got {type(e).__name__}")
    name = e.get("file")
    if name is None:
        raise BundleError(f"{where}: no `file` (each variant names its model file)")
    if not safe_file_name(name):
        raise BundleError(f"{where}: file {name!r} is not a plain file name in the bundle (no separators, '..' or absolute paths)")
    path = bundle / name
    try:
        inside = path.resolve().parent == bundle.resolve()
    except OSError:
        inside = False
    if not inside:
        raise BundleError(f"{where}: file {name!r} resolves outside the bundle (a symlink?)")
    for field in ("name", "format", "precision"):
        if e.get(field) is not None and not isinstance(e[field], str):
            raise BundleError(f"{where}: `{field}` must be a string")
    digest = e.get("sha256")
    if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise BundleError(f"{where}: `sha256` is not a sha256 hex digest")
    return e, path


def bundle_targets(bundle: Path) -> list[Target]:
    """Model files listed in metadata.json (`variants`, or `models`), else every .onnx/.tflite.
    BundleError for metadata that is unreadable or names anything but a file of the bundle."""
    meta_path = bundle / "metadata.json"
    meta = _read_metadata(meta_path) if meta_path.is_file() else {}
    key = "variants" if meta.get("variants") is not None else "models"
    raw = meta.get(key) or []
    if not isinstance(raw, list):
        raise BundleError(f"{meta_path}: `{key}` must be a list of file entries")
    entries = [_entry_path(bundle, meta_path, key, i, e) for i, e in enumerate(raw)]
    files = meta.get("files")
    hashes = {k: v for k, v in files.items() if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)} if isinstance(files, dict) else {}
    if not entries:
        root = bundle.resolve()
        entries = [
            ({"name": p.stem, "file": str(p.relative_to(bundle)), "format": p.suffix.lstrip("."), "precision": _guess_precision(p.stem)}, p)
            for p in sorted(bundle.rglob("*"))
            if p.suffix in (".onnx", ".tflite") and p.is_file() and not p.is_symlink() and root in p.resolve().parents
        ]
    targets = []
    for e, path in entries:
        try:
            v = ModelVariant.from_dict({"name": path.stem, "format": path.suffix.lstrip("."), "precision": "", **e})
        except (TypeError, ValueError) as err:
            raise BundleError(f"{meta_path}: `{key}` entry for {e['file']!r}: {err}") from None
        meta = {k: val for k, val in e.items() if k not in ("file", "sha256")}
        t = Target(v.name, v.format, v.precision or _guess_precision(v.name), [path], meta, sha256=[v.sha256 or hashes.get(v.file)])
        if not path.is_file():
            t.problem = f"missing: metadata.json lists {v.file} but the bundle has no such file; not measured"
        targets.append(t)
    return targets


def _guess_precision(stem: str) -> str:
    s = stem.lower()
    for p in ("int8-dynamic", "int8-static", "fp16", "int8"):
        if p in s or p.replace("-", "_") in s:
            return p
    return "fp32"


# ---------------------------------------------------------------- eval inputs


# ---------------------------------------------------------------- running


def _stage_dir(targets: list[Target], inputs: Path, work: Path) -> dict[str, str]:
    """Lay out what a device needs (measure.py, the edge_runtime package, inputs, model files); return
    target name -> path of each file relative to `work`. Targets with a problem are left out;
    a staged file whose sha256 differs from metadata.json's gives its target a problem and is
    removed, so only the bytes the bundle describes are ever measured or sent to a board."""
    copy_payload(work)
    shutil.copy2(inputs, work / "inputs.npz")
    rel: dict[str, str] = {}
    for ti, t in enumerate(targets):
        if t.problem:
            continue
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
            expected = (t.sha256 or [])[fi] if fi < len(t.sha256 or []) else None
            if expected and dest.is_file() and (got := sha256_file(dest)) != expected:
                t.problem = (f"sha256 mismatch: {f.name} is not the file metadata.json describes "
                             f"(expected {expected[:12]}..., found {got[:12]}...); not measured")
        if t.problem:
            for fi in range(len(t.files)):
                staged = rel.pop(f"{ti}/{fi}", None)
                if staged:
                    _remove(work / staged)
    return rel


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def measure_args(
    model_paths: list[str], runtime: str, threads: int, cfg: BenchConfig, inputs: str, buckets: list[int] | None = None
) -> list[str]:
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
        if not cfg.accuracy_seq_lens:
            args.append("--no-fixed-accuracy")
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


def rows_from_child(
    child: dict[str, Any], target: Target, device_stamp: dict[str, Any], data: dict[str, np.ndarray], extra: dict[str, Any]
) -> list[dict[str, Any]]:
    """Turn one child's JSON into stamped rows, one per (batch, seq_len); one error row if it failed."""
    labels = data.get("labels")
    teacher = data.get("teacher_preds")
    acc, agr = _accuracy(child.get("preds_real"), labels, teacher)
    fixed = {k: _accuracy(v, labels, teacher) for k, v in (child.get("preds_fixed") or {}).items()}
    base = {
        "schema": SCHEMA,
        "variant": target.name,
        "format": target.format,
        "precision": target.precision,
        "files": [f.name for f in target.files],
        "seq_buckets": child.get("buckets") or [],
        "runtime": child.get("runtime"),
        "runtime_version": child.get("runtime_version"),
        "threads": child.get("threads"),
        "device": device_stamp.get("device"),
        "stamp": device_stamp,
        "emulated": bool(device_stamp.get("emulated")),
        "size_bytes": target.size_bytes,
        "gzip_bytes": target.gzip_bytes,
        "load_ms": child.get("load_ms"),
        "rss_baseline_mb": child.get("rss_baseline_mb"),
        "rss_peak_mb": child.get("rss_peak_mb"),
        "rss_growth_mb": child.get("rss_growth_mb"),
        "accuracy": acc,
        "agreement": agr,
        "correct_real": correct_string(child.get("preds_real"), labels),
        "accuracy_fixed": {k: v[0] for k, v in fixed.items()},
        "agreement_fixed": {k: v[1] for k, v in fixed.items()},
        "source": child.get("source", "measure.py"),
        "error": child.get("error"),
        "skipped": bool(child.get("skipped") or str(child.get("error") or "").startswith(SKIPPED_PREFIXES)),
        **extra,
    }
    if child.get("preds_real") is not None:
        base.update(fidelity.device_metrics(child.get("preds_real"), data))
    if not child.get("ok"):
        return [dict(base, batch=None, seq_len=None)]
    return [dict(base, **{k: v for k, v in lat.items()}) for lat in child.get("latency", [])] or [dict(base, batch=None, seq_len=None)]


TIMEOUT_RC = 124  # what every device returns for a command killed at its timeout


def parse_child_output(rc: int, stdout: str, stderr: str, timeout: float | None = None) -> dict[str, Any]:
    """The last JSON line of a child's stdout, or an error record that says what happened."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(value, dict):
                return value
            break
    if rc == TIMEOUT_RC and timeout is not None:
        return {
            "ok": False,
            "error": f"timed out after {timeout:g}s (the per-row limit: raise `bench --timeout` or the benchmark stage's timeout_s)",
        }
    tail = (stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {"ok": False, "error": f"child exited {rc}: {tail}"}


def run_on_device(
    device: Device, targets: list[Target], inputs: Path, cfg: BenchConfig, extra: dict[str, Any], log: Any = None,
    bundle: Path | None = None, host_cache: dict[tuple[Any, ...], dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Measure every target with every runtime that fits its format, sequentially, one child each.
    A target whose files failed their check gets one error row and is never measured. On a device
    other than this machine, predictions are compared with this host's (a seeded sample of rows
    under emulation); with `bundle`, the golden-vector suite runs there too."""
    rows: list[dict[str, Any]] = []
    sweep()  # scratch dirs of benchmarks that were killed
    with scratch_dir("bench") as work:
        total = int(np.load(inputs)["input_ids"].shape[0])
        n = fidelity.sample_size(cfg.accuracy_rows, bool(getattr(device, "emulated", False)), total) if cfg.accuracy else total
        inputs = fidelity.sample_inputs(inputs, n, cfg.accuracy_seed, work / "sampled.npz")
        data = dict(np.load(inputs))
        rel = _stage_dir(targets, inputs, work)
        compare = cfg.accuracy and cfg.host_reference and device.python and device.name != "local"
        remote = device.push(work)
        stamp_cache: dict[str, Any] | None = None
        for ti, t in enumerate(targets):
            runtimes = [r for r in FORMAT_RUNTIMES.get(t.format, ()) if r in cfg.runtimes]
            if t.problem:
                rows.extend(
                    rows_from_child(
                        {"ok": False, "runtime": None, "threads": None, "error": t.problem}, t, full_stamp(device, stamp_cache), data, extra
                    )
                )
                if log is not None:
                    log.error("  %s: %s", t.name, t.problem)
                continue
            paths = [f"{remote}/{rel[f'{ti}/{fi}']}" for fi in range(len(t.files))]
            for rt in runtimes:
                for threads in cfg.threads:
                    try:
                        if not device.python:
                            child = _native_benchmark(device, t, paths, rt, threads, cfg)
                        else:
                            rc, out, err = device.run_python(
                                [f"{remote}/measure.py", *measure_args(paths, rt, threads, cfg, f"{remote}/inputs.npz")], cfg.timeout_s
                            )
                            child = parse_child_output(rc, out, err, cfg.timeout_s)
                    except DeviceError as err:
                        # a dropped connection or a timeout: keep what was measured, say what was lost
                        child = {"ok": False, "runtime": rt, "threads": threads, "error": f"device error: {err}"}
                        rows.extend(rows_from_child(child, t, full_stamp(device, stamp_cache), data, extra))
                        if log is not None:
                            log.error("  %s: %s; keeping the %d row(s) measured before it", device.name, err, len(rows) - 1)
                        return rows
                    stamp_cache = full_stamp(device, child.get("stamp") or stamp_cache)
                    new = rows_from_child(child, t, stamp_cache, data, extra)
                    if compare and child.get("ok"):
                        host = _host_run(work, rel, ti, t, rt, threads, cfg, host_cache if host_cache is not None else {})
                        for r in new:
                            r.update(fidelity.compare_with_host(child, host, data))
                    rows.extend(new)
                    if log is not None:
                        log.info("  %s", describe_row(new[0]))
        if bundle is not None and cfg.device_tests and device.python:
            _attach_device_tests(device, bundle, targets, rows, cfg, log)
    return rows


def _host_run(work: Path, rel: dict[str, str], ti: int, t: Target, runtime: str, threads: int, cfg: BenchConfig,
              cache: dict[tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    """This host's predictions of the same file on the same rows (once per file, runtime and sample)."""
    key = (tuple(t.sha256 or [f.name for f in t.files]), runtime, threads, fidelity.digest(work / "inputs.npz"))
    if key not in cache:
        ref = BenchConfig(**{**_config_dict(cfg), "real_lengths": False, "accuracy": True, "accuracy_seq_lens": ()})
        paths = [str(work / rel[f"{ti}/{fi}"]) for fi in range(len(t.files))]
        for rt in (runtime, *fidelity.HOST_FALLBACK.get(runtime, ())):
            argv = [str(work / "measure.py"), *measure_args(paths, rt, threads, ref, str(work / "inputs.npz")), "--accuracy-only"]
            cache[key] = fidelity.host_reference(argv, cfg.timeout_s)
            if not str(cache[key].get("error") or "").startswith(SKIPPED_PREFIXES):
                break
    return cache[key]


def _attach_device_tests(
    device: Device, bundle: Path, targets: list[Target], rows: list[dict[str, Any]], cfg: BenchConfig, log: Any
) -> None:
    """Run the golden-vector suite per runtime and put each file's verdict on its rows."""
    meta = _read_metadata(bundle / "metadata.json") if (bundle / "metadata.json").is_file() else {}
    variants = [v for v in (meta.get("variants") or meta.get("models") or []) if isinstance(v, dict)]
    if not variants:
        return
    # runtimes that measured a file here: one not installed already has its skipped rows
    runtimes = [
        rt for rt in cfg.runtimes if rt in device_suite.RUNTIME_FORMAT and any(r.get("runtime") == rt and not r.get("error") for r in rows)
    ]
    reports = device_suite.run_suite(device, bundle, runtimes, cfg.timeout_s)
    for rt, report in reports.items():
        verdicts = device_suite.file_verdicts(report, variants, rt)
        suite = device_suite.device_verdict(report)
        if log is not None:
            log.info("  device_tests on %s / %s: %s %s", device.name, rt, suite, report.get("counts") or report.get("error"))
        for r in rows:
            if r.get("runtime") == rt and r.get("files"):
                got = device_suite.merge(verdicts, list(r["files"]))
                if got is not None:
                    r["device_tests"] = {**got, "suite": suite}


def _native_benchmark(device: Device, t: Target, paths: list[str], runtime: str, threads: int, cfg: BenchConfig) -> dict[str, Any]:
    """Devices without Python: LiteRT's benchmark_model per .tflite file (no accuracy there)."""
    bench = getattr(device, "benchmark_model", None)
    if t.format != "tflite" or runtime != "litert" or bench is None:
        return {
            "ok": False,
            "runtime": runtime,
            "threads": threads,
            "skipped": True,
            "error": f"{device.name} runs only .tflite files through benchmark_model",
        }
    latency = []
    child: dict[str, Any] = {"ok": True, "runtime": "benchmark_model", "threads": threads, "source": "benchmark_model"}
    for path in paths:
        res = bench(path, threads=threads, runs=cfg.runs, warmup=cfg.warmup, min_secs=cfg.min_secs, timeout=cfg.timeout_s)
        if not res.get("ok"):
            return {**child, "ok": False, "error": res.get("error")}
        child.update({k: res[k] for k in ("load_ms", "rss_peak_mb", "rss_growth_mb", "runtime_version") if res.get(k) is not None})
        latency.append(
            {
                "batch": 1,
                "seq_len": None,
                "run_seq_len": None,
                **{k: v for k, v in res.items() if k.endswith("_ms") and k != "load_ms"},
                "runs": res.get("runs"),
                "cv": res.get("cv"),
            }
        )
    child["latency"] = latency
    return child


# ---------------------------------------------------------------- flags and output


def flag_rows(rows: list[dict[str, Any]], cv_threshold: float) -> list[dict[str, Any]]:
    """Add `flags`: noisy (cv over threshold), int8-slower-than-fp32 (vs its fp32 twin of the same
    format, runtime, device, threads, batch and length), emulated, random-weights, error."""
    def twin_key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (
            r.get("device"),
            r.get("format"),
            r.get("runtime"),
            r.get("threads"),
            r.get("batch"),
            r.get("seq_len"),
            tuple(r.get("seq_buckets") or ()),
        )

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
        if (r.get("device_tests") or {}).get("verdict") == "fail":
            flags.add("device-tests-failed")
        limit = r.get("min_agreement")
        if r.get("host_agreement") is not None and r["host_agreement"] < (1.0 if limit is None else float(limit)):
            flags.add("differs-from-host")
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
    suites = {(r.get("device"), r.get("runtime"), tuple(r.get("files") or ())): r["device_tests"] for r in rows if r.get("device_tests")}
    agreements = [r["host_agreement"] for r in rows if r.get("host_agreement") is not None]
    return {
        "device_tests_failed": sum(v["verdict"] != "pass" for v in suites.values()), "device_tests_run": len(suites),
        "min_host_agreement": min(agreements, default=None),
        "rows": len(rows), "errors": len(rows) - len(ok), "noisy": sum("noisy" in r.get("flags", ()) for r in rows),
        "int8_slower": sum("int8-slower-than-fp32" in r.get("flags", ()) for r in rows),
        "fastest": None if best is None else {"variant": best["variant"], "runtime": best["runtime"], "p50_ms": best["p50_ms"]},
    }


def benchmark(
    targets: list[Target],
    inputs: Path,
    cfg: BenchConfig,
    extra: dict[str, Any],
    log: Any = None,
    device_options: dict[str, Any] | None = None,
    bundle: Path | None = None,
) -> list[dict[str, Any]]:
    """Every target on every device of the config; rows flagged. With `bundle`, its golden-vector
    suite also runs on each device."""
    targets = [t for t in targets if any(fnmatch.fnmatch(t.name, g) for g in cfg.include)]
    rows: list[dict[str, Any]] = []
    host_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
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
            rows += run_on_device(device, targets, inputs, cfg, extra, log, bundle, host_cache)
        finally:
            device.close()
    return flag_rows(rows, cfg.cv_threshold)


# ---------------------------------------------------------------- the CLI


def cli_bench(args: Any) -> int:
    """`albert-edge bench BUNDLE --device ...`: 0 every file measured (or skipped: runtime not
    installed), 1 any file failed its sha256 check, to load or to measure, 2 bad input."""
    import sys

    from albert_edge.schema import build

    try:
        bundle = find_bundle(args.bundle)
        timeout = getattr(args, "timeout", None)
        cfg = BenchConfig(
            devices=(args.device,), threads=(args.threads,), runs=args.runs, warmup=args.warmup,
            seq_lens=tuple(args.seq_len or (128,)),
            runtimes=tuple(r.strip() for r in args.runtimes.split(",") if r.strip()) or RUNTIMES,
            benchmark_model=args.benchmark_model, **({"timeout_s": float(timeout)} if timeout is not None else {}),
            accuracy_rows=getattr(args, "accuracy_rows", None), accuracy_seed=getattr(args, "accuracy_seed", 0),
            device_tests=not getattr(args, "no_device_tests", False),
        )
        cfg = build(BenchConfig, _config_dict(cfg), "bench")
        targets = bundle_targets(bundle)
        if not targets:
            raise BundleError(f"{bundle}: no model files")
        out = bench_out_dir(Path(args.bundle), bundle, Path(args.out) if args.out else None)
        meta = _read_metadata(bundle / "metadata.json") if (bundle / "metadata.json").is_file() else {}
    except (OSError, ValueError) as err:  # BundleError, ConfigError and JSON errors are ValueErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    with scratch_dir("inputs") as tmp:
        if (bundle / EVAL_NPZ).is_file():
            inputs = bundle / EVAL_NPZ
        else:
            print(f"note: no {EVAL_NPZ} in {bundle}: timing random token ids, no accuracy", file=sys.stderr)
            inputs = synthetic_npz(tmp / "inputs.npz", width=max(cfg.seq_lens))
        key, pipeline = artifact_key(bundle)
        extra = {"artifact": bundle.name, "random_weights": bool(meta.get("random_weights")), **run_stamp(None, {"bundle": key}, pipeline)}
        try:
            rows = benchmark(targets, inputs, cfg, extra, None, {"benchmark_model": cfg.benchmark_model}, bundle)
        except DeviceError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    path = write_results(rows, out)
    for r in rows:
        print(describe_row(r))
    print(f"{len(rows)} rows -> {path}")
    failed = failed_files(rows)
    if failed:
        print(f"{len(failed)} file(s) failed: " + "; ".join(f"{name}: {why}" for name, why in failed.items()), file=sys.stderr)
        return 1
    return 0


def failed_files(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Variant (per device) -> why, for every file that failed its check, to load, to measure or
    device_tests there. Rows that only say a runtime is not installed here are skipped, not failed."""
    out: dict[str, str] = {}
    for r in rows:
        key = r["variant"] if len({x.get("device") for x in rows}) <= 1 else f"{r['variant']} on {r.get('device')}"
        if r.get("error") and not r.get("skipped"):
            out.setdefault(key, str(r["error"]).splitlines()[0][:300])
        suite = r.get("device_tests") or {}
        if suite.get("verdict") == "fail":  # golden vectors failed there, or nothing was checked
            out.setdefault(key, f"device_tests failed ({r.get('runtime')}): " + "; ".join(suite.get("why") or ["see the row"])[:300])
    return out


def bench_out_dir(given: Path, bundle: Path, out: Path | None) -> Path:
    """Where `bench` writes results.jsonl: never inside a cached artifact, whose files the cache
    verifies (a changed artifact is quarantined and its results deleted). --out if given, the run
    directory's bench/ for a run, the cache's runs/bench-ARTIFACT/ for a cached bundle, else
    beside a bundle that lives outside the cache."""
    if out is not None:
        art = _enclosing_artifact(out)
        if art is not None:
            raise ValueError(
                f"--out {out} is inside the cached artifact {art}: results there would invalidate it; choose another directory"
            )
        return out
    if (given / "summary.json").is_file():
        return given / "bench"
    art = _enclosing_artifact(bundle)
    if art is None:
        return bundle.parent / "bench"
    if art.parent.name == "artifacts":
        return art.parent.parent / "runs" / f"bench-{art.name}"
    raise ValueError(f"{bundle} is inside the cached artifact {art}: pass --out DIR for the results")


def _enclosing_artifact(path: Path) -> Path | None:
    """The artifact directory (holding manifest.json) that contains `path`, if any."""
    from albert_edge.artifacts import MANIFEST

    p = Path(path).resolve()
    for d in (p, *p.parents):
        if (d / MANIFEST).is_file():
            return d
    return None


def _config_dict(cfg: BenchConfig) -> dict[str, Any]:
    from albert_edge.schema import to_dict

    return to_dict(cfg)


__all__ = [
    "BenchConfig", "BundleError", "Target", "bench_out_dir", "benchmark", "bundle_targets", "cli_bench", "correct_string", "failed_files",
    "safe_file_name", "encoded_to_npz", "find_bundle", "flag_rows",
    "gzip_size", "measure_args", "parse_child_output", "read_results", "rows_from_child", "run_on_device", "write_results",
]
