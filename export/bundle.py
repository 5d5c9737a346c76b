"""`bundle`: the directory an app developer takes as it is. Every exported/quantised model file
from earlier steps, the tokenizer files, labels, metadata (I/O, buckets, quantisation,
measured accuracy and parity, sha256 of every file, library versions), golden vectors for
device tests, and BUNDLE.md with minimal inference code."""

from __future__ import annotations

import fnmatch
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.contract import StageContext, StageError
from albert_edge.data import EVAL_NPZ, encoded_to_npz
from albert_edge.registry import stage
from albert_edge.schema import require, to_dict

BUNDLE_DIR = "bundle"
GOLDEN_FILE = "golden.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "vocab.txt")
# Tolerance a device must meet against the host-run logits of the same file.
GOLDEN_TOLERANCE = {
    "fp32": {"atol": 1e-4, "min_agreement": 1.0},
    "fp16": {"atol": 1e-2, "min_agreement": 0.97},
    "int8": {"atol": 5e-2, "min_agreement": 0.95},
}


@dataclass(frozen=True)
class BundleConfig:
    """Collect every model variant of the pipeline into a self-contained `bundle/` directory."""

    golden_rows: int = 32
    include: tuple[str, ...] = ("*",)

    def check(self) -> None:
        require(1 <= self.golden_rows <= 1000, "golden_rows", f"{self.golden_rows} is outside 1..1000", "a few dozen is plenty")
        require(len(self.include) > 0, "include", "give at least one variant-name glob", "['*'] takes every variant")


def golden_tolerance(precision: str) -> dict[str, float]:
    """The tolerance device tests apply to a variant of this precision."""
    return dict(GOLDEN_TOLERANCE["int8" if precision.startswith("int8") else precision if precision in GOLDEN_TOLERANCE else "int8"])


def variant_buckets(v: dict[str, Any]) -> list[int]:
    """Sequence lengths a bucketed variant accepts (one signature each); [] for a dynamic-shape file."""
    return sorted(int(b) for b in v.get("buckets") or [])


def _lineage(art: Any, by_key: dict[str, Any]) -> set[str]:
    """Keys of every artifact `art` was built from (itself included)."""
    seen: set[str] = set()
    todo = [art.key]
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        a = by_key.get(key)
        for v in (a.manifest.get("inputs", {}) if a else {}).values():
            todo.extend(v if isinstance(v, list) else [v] if v else [])
    return seen


def collect_variants(model_art: Any, earlier: list[Any], include: tuple[str, ...]) -> tuple[list[tuple[Any, dict[str, Any]]], list[str]]:
    """(artifact, variant) pairs built from `model_art` whose names match `include`; plus notes
    on what was skipped and why (another model's files would not fit this tokenizer/labels)."""
    by_key = {a.key: a for a in earlier}
    picked: list[tuple[Any, dict[str, Any]]] = []
    notes: list[str] = []
    for art in earlier:
        for v in art.variants():
            if not any(fnmatch.fnmatch(v["name"], g) for g in include):
                continue
            if model_art.key not in _lineage(art, by_key):
                notes.append(f"{art.step}/{v['name']}: skipped, built from a different model than {model_art.step}")
                continue
            picked.append((art, v))
    return picked, notes


def _bundle_name(art: Any, v: dict[str, Any], taken: set[str]) -> str:
    suffix = Path(v["file"]).suffix
    name = f"{v['name']}{suffix}"
    if name in taken:
        name = f"{art.step}-{v['name']}{suffix}"
    taken.add(name)
    return name


def describe_io(path: Path) -> dict[str, Any]:
    """Input/output names, dtypes and shapes as the file declares them."""
    if path.suffix == ".onnx":
        import onnx

        m = onnx.load(str(path), load_external_data=False)

        def spec(vi: Any) -> dict[str, Any]:
            t = vi.type.tensor_type
            return {"name": vi.name, "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)),
                    "shape": [d.dim_param or d.dim_value for d in t.shape.dim]}

        inits = {i.name for i in m.graph.initializer}
        return {"inputs": [spec(i) for i in m.graph.input if i.name not in inits], "outputs": [spec(o) for o in m.graph.output]}
    from edge_runtime import runtime_for, tflite_interpreter

    interp = tflite_interpreter(str(path), runtime_for(str(path)), 1)

    def tspec(d: dict[str, Any]) -> dict[str, Any]:
        out = {"name": d["name"], "dtype": np.dtype(d["dtype"]).name, "shape": [int(x) for x in d["shape"]]}
        scale, zero = d.get("quantization", (0.0, 0))
        if scale:
            out["quantization"] = {"scale": float(scale), "zero_point": int(zero)}
        return out

    return {"inputs": [tspec(d) for d in interp.get_input_details()], "outputs": [tspec(d) for d in interp.get_output_details()]}


def _tokenizer_files(model_dir: Path, dest: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, dest / name)
            copied.append(name)
    return copied


def _golden_rows(ctx: StageContext[Any], tok: Any, rows: int) -> tuple[list[str], Any]:
    from albert_edge.data import encode, read_examples

    ex = read_examples(ctx.pipeline.task, "eval")
    enc = encode(tok, ex, ctx.pipeline.task.max_seq_len)
    idx = list(range(min(rows, len(enc))))
    return [ex.texts[i] for i in idx], enc.subset(idx)


@stage("bundle", config=BundleConfig, version="4", inputs=("model", "?teacher", "*"), output="bundle", gated=True, uses_budget=True)
def bundle(ctx: StageContext[BundleConfig]) -> dict[str, Any]:
    """Write bundle/: every model file that passes the budget, tokenizer, labels, metadata with sha256s and verdicts, golden vectors, BUNDLE.md."""
    from albert_edge.artifacts import file_hashes, library_versions, sha256_file
    from albert_edge.models import count_parameters
    from albert_edge.stages.common import load_input_model, task_data
    from edge_runtime import ModelLoadError
    from export.parity import check, clip_encoded, file_logits, torch_logits

    cfg: BundleConfig = ctx.config
    model_art = ctx.inputs["model"]
    picked, notes = collect_variants(model_art, ctx.inputs["*"], cfg.include)
    for n in notes:
        ctx.log.info("  %s", n)
    if not picked:
        raise StageError(f"no model files to bundle: no earlier export/quantize step built from {model_art.step} has a variant matching "
                         f"{list(cfg.include)}; add export_onnx or export_tflite before bundle")
    out = ctx.out_dir / BUNDLE_DIR
    out.mkdir(parents=True)
    model, tok, meta = load_input_model(ctx)
    task = ctx.pipeline.task
    pad = tok.pad_token_id or 0
    texts, enc = _golden_rows(ctx, tok, cfg.golden_rows)
    reference = torch_logits(model, enc, pad_id=pad)
    gate = _Gate.of(ctx, model, task_data(ctx, tok, ("validation",))["validation"], pad)
    clipped_refs: dict[int, np.ndarray] = {}
    taken: set[str] = set()
    variants, expected, problems, dropped, verdicts = [], {}, [], [], []
    for art, v in picked:
        src = art.path / v["file"]
        name = _bundle_name(art, v, taken)
        shutil.copy2(src, out / name)
        buckets = variant_buckets(v)
        try:
            verdict = gate.judge(v["name"], out / name, buckets)
            # batch 1 at the real length (through the buckets), as an app and device_tests run it: a
            # dynamic-int8 file's activation ranges, and so its logits, depend on the batch around a row
            logits = file_logits(out / name, enc, buckets=buckets or None, threads=ctx.pipeline.threads, pad_id=pad, batch_size=1)
        except ModelLoadError as err:
            raise StageError(f"{art.step}/{v['name']}: {err}") from None
        ctx.log.info("  %s", verdict.message())
        if not verdict.passed:
            verdicts.append(verdict)
            if ctx.budget.on_miss == "drop":
                (out / name).unlink()
                taken.discard(name)
                dropped.append({"name": v["name"], "source_step": art.step, "reasons": list(verdict.reasons), "verdict": verdict.as_dict()})
                continue
        ref = reference
        if buckets and max(enc.lengths()) > max(buckets):  # the file truncates: compare with the truncated input
            top = max(buckets)
            ref = clipped_refs.setdefault(top, torch_logits(model, clip_encoded(enc, top), pad_id=pad))
        res = check(v["name"], ref, logits, enc.labels, precision=v["precision"], atol=1e-4,
                    min_agreement=golden_tolerance(v["precision"])["min_agreement"])
        if v["precision"] == "fp32" and v["format"] == "onnx" and not buckets and not res.ok:
            problems.append(res.summary() + "\n" + res.table)  # a dynamic fp32 file must reproduce the model it claims to be
        expected[name] = np.round(logits, 6).tolist()
        record = {k: val for k, val in v.items() if k not in ("file", "sha256", "size_bytes")}
        record.update(file=name, sha256=sha256_file(out / name), size_bytes=(out / name).stat().st_size, source_step=art.step,
                      source_artifact=art.path.name, quantization=v["precision"], golden=golden_tolerance(v["precision"]),
                      golden_vs_torch={"max_abs_diff": res.max_abs_diff, "agreement": res.agreement}, verdict=verdict.as_dict(),
                      **describe_io(out / name))
        variants.append(record)
    if problems:
        raise StageError("bundled fp32 files do not reproduce the model:\n" + "\n".join(problems))
    if not variants:
        raise StageError("every model file missed the budget, nothing to bundle: " + "; ".join(d.message() for d in verdicts))
    tok_files = _tokenizer_files(model_art.model_dir, out)
    labels = list(task.label_names)
    (out / "labels.json").write_text(json.dumps(labels, indent=2))
    golden = {"rows": [{"text": t, "input_ids": ids, "token_type_ids": tt, "label": int(y)}
                       for t, ids, tt, y in zip(texts, enc.input_ids, enc.token_type_ids, enc.labels)],
              "reference_logits": np.round(reference, 6).tolist(), "expected_logits": expected, "pad_id": pad}
    (out / GOLDEN_FILE).write_text(json.dumps(golden))
    _write_eval_npz(ctx, tok, out / EVAL_NPZ)
    buckets = sorted({b for v in variants for b in variant_buckets(v)})
    (out / "BUNDLE.md").write_text(render_bundle_md(variants, labels, tok_files, buckets, task.max_seq_len, ctx.pipeline.random_weights))
    metadata = {
        "format_version": 1,
        "pipeline": ctx.pipeline.name,
        "model": {"source": ctx.pipeline.model, "step": model_art.step, "params": count_parameters(model),
                  "accuracy": model_art.metrics.get("accuracy"), "num_labels": task.num_labels},
        "random_weights": bool(ctx.pipeline.random_weights or meta.get("random_weights")),
        "labels": labels,
        "max_seq_len": task.max_seq_len,
        "buckets": buckets,
        "tokenizer": {"files": tok_files, "class": type(tok).__name__, "pad_id": pad, "cls_id": tok.cls_token_id,
                      "sep_id": tok.sep_token_id, "unk_id": tok.unk_token_id, "lowercase": bool(getattr(tok, "do_lower_case", False))},
        "golden": {"file": GOLDEN_FILE, "rows": len(enc), "tolerance_by_precision": GOLDEN_TOLERANCE,
                   "note": "expected_logits are the host run of each file; compare a device run of that file with them"},
        "variants": variants,
        "budget": {**to_dict(ctx.budget), "judged_on": "validation", "rows": gate.rows, "teacher_val_accuracy": gate.reference},
        "dropped": dropped,
        "skipped": notes,
        "libraries": library_versions(),
        "files": file_hashes(out),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))
    ctx.info["variants"] = [{**v, "file": f"{BUNDLE_DIR}/{v['file']}"} for v in variants]
    ctx.log.info("  bundled %d model files (%s), %d golden rows", len(variants), ", ".join(v["file"] for v in variants), len(enc))
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return {"variants": len(variants), "golden_rows": len(enc), "size_bytes": size, "size_mb": round(size / 1e6, 3),
            "random_weights": metadata["random_weights"], "dropped": [d["name"] for d in dropped],
            "verdict": {"passed": not verdicts or ctx.budget.on_miss == "drop", "reasons": [d.message() for d in verdicts],
                        "files": len(picked), "missed": [d.name for d in verdicts], "on_miss": ctx.budget.on_miss}}


@dataclass
class _Gate:
    """Judges every bundled file the same way (albert_edge.budget) on the held-out validation
    rows: accuracy against the teacher's there, argmax agreement with the fp32 model."""

    model: Any
    enc: Any
    pad: int
    threads: int
    budget: Any
    reference: float
    rows: int
    fp32: dict[int, np.ndarray] = field(default_factory=dict)  # by truncation width (0: none)

    @classmethod
    def of(cls, ctx: StageContext[Any], model: Any, enc: Any, pad: int) -> _Gate:
        from export.parity import torch_logits

        teacher = ctx.inputs.get("teacher")
        ref = teacher.metrics.get("val_accuracy") if teacher is not None else None
        if ref is None:
            ref = float((torch_logits(model, enc, pad_id=pad).argmax(-1) == np.asarray(enc.labels)).mean())
        return cls(model, enc, pad, ctx.pipeline.threads, ctx.budget, float(ref), len(enc))

    def judge(self, name: str, path: Path, buckets: list[int]) -> Any:
        from albert_edge.budget import judge
        from export.parity import clip_encoded, file_logits, torch_logits

        width = max(buckets) if buckets else 0
        enc = clip_encoded(self.enc, width) if width else self.enc
        if width not in self.fp32:
            self.fp32[width] = torch_logits(self.model, enc, pad_id=self.pad)
        fp32 = self.fp32[width]
        logits = file_logits(path, enc, buckets=buckets or None, threads=self.threads, pad_id=self.pad, batch_size=1)  # as apps run it
        acc = float((logits.argmax(-1) == np.asarray(enc.labels)).mean())
        agreement = float((logits.argmax(-1) == fp32.argmax(-1)).mean())
        return judge(name, self.budget, accuracy=acc, reference=self.reference, agreement=agreement, rows=len(enc))


def _write_eval_npz(ctx: StageContext[Any], tok: Any, path: Path) -> None:
    """The whole tokenised eval split (+ labels, teacher predictions), so devices and
    `albert-edge bench` measure accuracy and agreement without a tokenizer."""
    from albert_edge.metrics import load_predictions
    from albert_edge.stages.common import task_data

    enc = task_data(ctx, tok, ("eval",))["eval"]
    teacher = ctx.inputs.get("teacher")
    preds = load_predictions(teacher.path) if teacher is not None else None
    encoded_to_npz(enc.input_ids, enc.token_type_ids, enc.labels, path, preds)


def render_bundle_md(variants: list[dict[str, Any]], labels: list[str], tok_files: list[str], buckets: list[int], max_seq_len: int,
                     random_weights: bool) -> str:
    """BUNDLE.md: what is in the bundle and minimal inference code, tokenisation included."""
    onnx_v = next((v for v in variants if v["format"] == "onnx"), None)
    tfl_v = next((v for v in variants if v["format"] == "tflite"), None)
    rows = "\n".join(
        f"| `{v['file']}` | {v['format']} | {v['precision']} | {'/'.join(map(str, variant_buckets(v))) or 'dynamic'} | "
        f"{v['size_bytes'] / 1e6:.2f} MB | {100 * v['accuracy']:.2f}% | {100 * v['agreement']:.2f}% |"
        if isinstance(v.get("accuracy"), (int, float)) and isinstance(v.get("agreement"), (int, float)) else
        f"| `{v['file']}` | {v['format']} | {v['precision']} | {'/'.join(map(str, variant_buckets(v))) or 'dynamic'} | {v['size_bytes'] / 1e6:.2f} MB | - | - |"
        for v in variants)
    warn = "\n> **Random weights**: this bundle is for latency and memory measurements only; its predictions mean nothing.\n" if random_weights else ""
    tok_file = "tokenizer.json" if "tokenizer.json" in tok_files else (tok_files[0] if tok_files else "tokenizer.json")
    bucket_list = ", ".join(map(str, buckets)) or str(max_seq_len)
    parts = [f"""# Model bundle
{warn}
Text classifier with labels {json.dumps(labels)} (index = logit position). Every file's sha256,
input/output names, dtypes and shapes, measured accuracy and parity are in `metadata.json`.

| file | format | precision | buckets | size | accuracy | agreement with fp32 |
|---|---|---|---|---|---|---|
{rows}

Tokenizer: `{"`, `".join(tok_files)}`. Inputs are `input_ids`, `attention_mask`, `token_type_ids`
(int64 in ONNX; see `metadata.json` for each TFLite file's dtypes), at most {max_seq_len} tokens.
Fixed-shape files take sequences padded to a bucket ({bucket_list}): use the smallest bucket
that holds the tokens; pad with the pad id and mask 0. `golden.json` holds tokenised inputs
with the logits each file must produce (tolerance per precision in `metadata.json`): check your
tokeniser against its `input_ids` and your runtime against its `expected_logits`.
"""]
    tokenize_py = f"""from tokenizers import Tokenizer  # pip install tokenizers numpy
import json, numpy as np

tok = Tokenizer.from_file("{tok_file}")
labels = json.load(open("labels.json"))
enc = tok.encode("a charming and often affecting journey .")
ids = np.array([enc.ids], dtype=np.int64)
mask = np.ones_like(ids)
types = np.array([enc.type_ids], dtype=np.int64)
"""
    if onnx_v:
        parts.append(f"""## Python, onnxruntime

```python
{tokenize_py}
import onnxruntime as ort  # pip install onnxruntime
sess = ort.InferenceSession("{onnx_v['file']}", providers=["CPUExecutionProvider"])
logits = sess.run(["logits"], {{"input_ids": ids, "attention_mask": mask, "token_type_ids": types}})[0]
print(labels[int(logits[0].argmax())])
```
""")
    tfl_file = tfl_v["file"] if tfl_v else "model.tflite"
    parts.append(f"""## Python, LiteRT interpreter
{'' if tfl_v else chr(10) + '(no .tflite file in this bundle; the same code applies to one built by export_tflite)' + chr(10)}
```python
{tokenize_py}
from ai_edge_litert.interpreter import Interpreter  # pip install ai-edge-litert
interp = Interpreter(model_path="{tfl_file}", num_threads=2)
sigs = [k for k in interp.get_signature_list() if k.startswith("seq_")]
buckets = sorted(int(k[4:]) for k in sigs) or [int(interp.get_input_details()[0]["shape"][1])]
seq = next((b for b in buckets if ids.shape[1] <= b), buckets[-1])  # smallest bucket that fits
def fit(a):  # pad with 0 (pad id, mask 0) or truncate to the bucket
    out = np.zeros((1, seq), dtype=a.dtype); out[0, : min(seq, a.shape[1])] = a[0, :seq]; return out
feeds = {{"input_ids": fit(ids), "attention_mask": fit(mask), "token_type_ids": fit(types)}}
def role(name):  # match a file's input name to a feed
    return next((k for k in feeds if k in name), "attention_mask" if "mask" in name else "input_ids")
if sigs:  # bucketed file: one signature per bucket
    runner = interp.get_signature_runner(f"seq_{{seq}}")
    ins, outs = runner.get_input_details(), runner.get_output_details()
    res = runner(**{{n: feeds[role(n)].astype(d["dtype"]) for n, d in ins.items()}})
    key = "logits" if "logits" in res else sorted(res)[0]
    logits, out = res[key].astype(np.float32), outs[key]
else:
    interp.allocate_tensors()
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], feeds[role(d["name"])].astype(d["dtype"]))
    interp.invoke()
    out = interp.get_output_details()[0]
    logits = interp.get_tensor(out["index"]).astype(np.float32)
if out["dtype"] != np.float32:  # full-integer file: dequantise
    scale, zero = out["quantization"]; logits = (logits - zero) * scale
print(labels[int(logits[0].argmax())])
```

## Android, Kotlin, TFLite Interpreter API

Bucketed files hold one signature per bucket (`seq_<N>`, see metadata.json `signatures`): pick
the smallest bucket that holds the tokens and run that signature by name. A test runs the
Python twin of this code against every bundled .tflite file through the same signature names.

```kotlin
// build.gradle: implementation("com.google.ai.edge.litert:litert:1.+")  (or org.tensorflow:tensorflow-lite)
// Tokenise with {tok_file}: e.g. implementation("ai.djl.huggingface:tokenizers:0.+") and
// HuggingFaceTokenizer.newInstance(path).encode(text).ids; check the ids against golden.json.
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.File

fun classify(modelDir: File, ids: LongArray, typeIds: LongArray): Int {{
    val interpreter = Interpreter(File(modelDir, "{tfl_file}"), Interpreter.Options().setNumThreads(2))
    val buckets = interpreter.signatureKeys.filter {{ it.startsWith("seq_") }}.map {{ it.removePrefix("seq_").toInt() }}.sorted()
    val seq = buckets.firstOrNull {{ ids.size <= it }} ?: buckets.last()   // smallest bucket that holds the tokens ({bucket_list})
    val key = "seq_$seq"
    val n = minOf(ids.size, seq)
    fun feed(name: String): Any {{   // pad with 0 (pad id, mask 0), truncate to the bucket
        val v = LongArray(seq) {{ i ->
            when {{
                i >= n -> 0L
                "mask" in name -> 1L
                "type" in name || "segment" in name -> typeIds[i]
                else -> ids[i]
            }}
        }}
        val int64 = interpreter.getInputTensorFromSignature(name, key).dataType() == DataType.INT64
        return if (int64) arrayOf(v) else arrayOf(IntArray(seq) {{ v[it].toInt() }})
    }}
    val inputs: Map<String, Any> = interpreter.getSignatureInputs(key).associateWith {{ feed(it) }}
    val outs = interpreter.getSignatureOutputs(key)
    val outName = outs.firstOrNull {{ "logits" in it }} ?: outs.sorted().first()
    val logits = Array(1) {{ FloatArray({len(labels)}) }}
    interpreter.runSignature(inputs, mapOf(outName to logits), key)
    interpreter.close()
    return logits[0].indices.maxByOrNull {{ logits[0][it] }} ?: 0   // index into labels.json
}}
```
""")
    return "\n".join(parts)
