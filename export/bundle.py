"""The parts of a bundle (the `bundle` stage, albert_edge.stages.bundle, puts them together):
which variants belong to a model, file names, I/O descriptions, tokenizer files, the golden
tolerance per precision, the model files copied in, judged and run on the golden rows
(`bundle_files`), golden.json, and BUNDLE.md with minimal inference code."""

from __future__ import annotations

import fnmatch
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albert_edge.budget import Verdict
from albert_edge.data import Encoded
from albert_edge.variant import ModelVariant
from export.judge import FileGate

BUNDLE_DIR = "bundle"
GOLDEN_FILE = "golden.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "vocab.txt")
# Tolerance a device must meet against the host-run logits of the same file.
GOLDEN_TOLERANCE = {
    "fp32": {"atol": 1e-4, "min_agreement": 1.0},
    "fp16": {"atol": 1e-2, "min_agreement": 0.97},
    "int8": {"atol": 5e-2, "min_agreement": 0.95},
}


def golden_tolerance(precision: str) -> dict[str, float]:
    """The tolerance device tests apply to a variant of this precision."""
    return dict(GOLDEN_TOLERANCE["int8" if precision.startswith("int8") else precision if precision in GOLDEN_TOLERANCE else "int8"])


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


def bundle_name(art: Any, v: dict[str, Any], taken: set[str]) -> str:
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


def tokenizer_files(model_dir: Path, dest: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, dest / name)
            copied.append(name)
    return copied



class BundleError(RuntimeError):
    """A bundle could not be made as asked (a file that does not load, fp32 files that do not
    reproduce the model, nothing within the budget); the message says which file and why."""


@dataclass
class BundledFiles:
    """What `bundle_files` put in the bundle: the records of the files kept, each kept file's
    host-run golden logits (by bundle file name), the files left out and the verdicts that missed."""

    variants: list[ModelVariant]
    expected: dict[str, list[list[float]]]
    dropped: list[dict[str, Any]]
    misses: list[Verdict]


def bundle_files(
    picked: list[tuple[Any, dict[str, Any]]],
    out: Path,
    gate: FileGate,
    golden: Encoded,
    reference: np.ndarray,
    model: Any,
    *,
    on_miss: str,
    threads: int = 1,
    pad_id: int = 0,
    log: logging.Logger | None = None,
) -> BundledFiles:
    """Copy each picked (artifact, variant) file into `out` under its bundle name, judge it
    (export.judge.FileGate), leave out a file that misses when `on_miss` is `drop`, and run it on
    the `golden` rows as an app does (batch 1 at the real length, through its buckets), checked
    against the model's `reference` logits there (cut to the file's largest bucket when it
    truncates). BundleError when a file does not load, a dynamic fp32 ONNX file does not
    reproduce the model, or no file is left."""
    from albert_edge.artifacts import sha256_file
    from edge_runtime import ModelLoadError
    from export.parity import check, clip_encoded, file_logits, torch_logits

    log = log or logging.getLogger("albert_edge")
    clipped_refs: dict[int, np.ndarray] = {}
    taken: set[str] = set()
    variants: list[ModelVariant] = []
    expected: dict[str, list[list[float]]] = {}
    problems: list[str] = []
    dropped: list[dict[str, Any]] = []
    misses: list[Verdict] = []
    for art, raw in picked:
        v = ModelVariant.from_dict(raw)
        name = bundle_name(art, raw, taken)
        shutil.copy2(art.path / v.file, out / name)
        buckets = list(v.buckets)
        try:
            verdict = gate.judge(v.name, out / name, buckets)
            # batch 1 at the real length (through the buckets), as an app and device_tests run it: a
            # dynamic-int8 file's activation ranges, and so its logits, depend on the batch around a row
            logits = file_logits(out / name, golden, buckets=buckets or None, threads=threads, pad_id=pad_id, batch_size=1)
        except ModelLoadError as err:
            raise BundleError(f"{art.step}/{v.name}: {err}") from None
        log.info("  %s", verdict.message())
        if not verdict.passed:
            misses.append(verdict)
            if on_miss == "drop":
                (out / name).unlink()
                taken.discard(name)
                dropped.append({"name": v.name, "source_step": art.step, "reasons": list(verdict.reasons), "verdict": verdict.as_dict()})
                continue
        ref = reference
        if buckets and max(golden.lengths()) > max(buckets):  # the file truncates: compare with the truncated input
            top = max(buckets)
            ref = clipped_refs.setdefault(top, torch_logits(model, clip_encoded(golden, top), pad_id=pad_id))
        res = check(v.name, ref, logits, golden.labels, precision=v.precision, atol=1e-4,
                    min_agreement=golden_tolerance(v.precision)["min_agreement"])
        if v.precision == "fp32" and v.format == "onnx" and not buckets and not res.ok:
            problems.append(res.summary() + "\n" + res.table)  # a dynamic fp32 file must reproduce the model it claims to be
        expected[name] = np.round(logits, 6).tolist()
        variants.append(v.with_fields(
            file=name, sha256=sha256_file(out / name), size_bytes=(out / name).stat().st_size, source_step=art.step,
            source_artifact=art.path.name, quantization=v.precision, golden=golden_tolerance(v.precision),
            golden_vs_torch={"max_abs_diff": res.max_abs_diff, "agreement": res.agreement}, verdict=verdict.as_dict(),
            **describe_io(out / name)))
    if problems:
        raise BundleError("bundled fp32 files do not reproduce the model:\n" + "\n".join(problems))
    if not variants:
        raise BundleError("every model file missed the budget, nothing to bundle: " + "; ".join(d.message() for d in misses))
    return BundledFiles(variants, expected, dropped, misses)


def write_golden(path: Path, texts: list[str], golden: Encoded, reference: np.ndarray, expected: dict[str, Any], pad_id: int) -> None:
    """golden.json: the tokenised golden rows with their texts and labels, the model's logits on
    them and each bundled file's host-run logits (what a device run of that file is compared with)."""
    doc = {"rows": [{"text": t, "input_ids": ids, "token_type_ids": tt, "label": int(y)}
                    for t, ids, tt, y in zip(texts, golden.input_ids, golden.token_type_ids, golden.labels)],
           "reference_logits": np.round(reference, 6).tolist(), "expected_logits": expected, "pad_id": pad_id}
    path.write_text(json.dumps(doc))


def _bundle_md_row(v: ModelVariant) -> str:
    """One file's row of BUNDLE.md's table."""
    shape = "/".join(map(str, v.buckets)) or "dynamic"
    head = f"| `{v.file}` | {v.format} | {v.precision} | {shape} | {(v.size_bytes or 0) / 1e6:.2f} MB |"
    if isinstance(v.accuracy, (int, float)) and isinstance(v.agreement, (int, float)):
        return f"{head} {100 * v.accuracy:.2f}% | {100 * v.agreement:.2f}% |"
    return f"{head} - | - |"


def render_bundle_md(variants: list[ModelVariant], labels: list[str], tok_files: list[str], buckets: list[int], max_seq_len: int,
                     random_weights: bool) -> str:
    """BUNDLE.md: what is in the bundle and minimal inference code, tokenisation included."""
    onnx_v = next((v for v in variants if v.format == "onnx"), None)
    tfl_v = next((v for v in variants if v.format == "tflite"), None)
    rows = "\n".join(_bundle_md_row(v) for v in variants)
    warn = (
        "\n> **Random weights**: this bundle is for latency and memory measurements only; its predictions mean nothing.\n"
        if random_weights
        else ""
    )
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
sess = ort.InferenceSession("{onnx_v.file}", providers=["CPUExecutionProvider"])
logits = sess.run(["logits"], {{"input_ids": ids, "attention_mask": mask, "token_type_ids": types}})[0]
print(labels[int(logits[0].argmax())])
```
""")
    tfl_file = tfl_v.file if tfl_v else "model.tflite"
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
