"""The mobile bundle: self-contained files, honest metadata, golden vectors that reproduce."""

from __future__ import annotations

import json

import numpy as np
import pytest

from albert_edge.artifacts import sha256_file
from tests.test_export_onnx import export_pipeline


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, tiny_cache, tiny_teacher):
    result = export_pipeline(tmp_path_factory.mktemp("bundle"), tiny_cache, tiny_teacher)
    step = result.steps[-1]
    assert step.stage == "bundle"
    return step.artifact.path / "bundle"


def test_bundle_layout_and_hashes(bundle_dir):
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    for name in ("labels.json", "golden.json", "BUNDLE.md", "tokenizer.json"):
        assert (bundle_dir / name).is_file(), name
    assert json.loads((bundle_dir / "labels.json").read_text()) == ["negative", "positive"]
    on_disk = {p.name for p in bundle_dir.iterdir() if p.name != "metadata.json"}
    assert set(meta["files"]) == on_disk
    for rel, digest in meta["files"].items():
        assert sha256_file(bundle_dir / rel) == digest
    assert meta["random_weights"] is True  # config:tiny starts from random weights
    assert meta["max_seq_len"] == 64 and meta["tokenizer"]["pad_id"] == 0
    assert "onnxruntime" in meta["libraries"] and "torch" in meta["libraries"]
    v = next(v for v in meta["variants"] if v["name"] == "onnx-fp32")
    assert v["file"] == "onnx-fp32.onnx" and v["quantization"] == "fp32"
    assert [i["name"] for i in v["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert v["inputs"][0]["dtype"] == "int64" and v["outputs"][0]["name"] == "logits"
    assert v["golden"]["atol"] == 1e-4 and v["golden_vs_torch"]["max_abs_diff"] <= 1e-4
    assert isinstance(v["accuracy"], float) and v["agreement"] == 1.0


def test_golden_vectors_reproduce_on_the_bundled_files(bundle_dir):
    from edge_runtime import open_model

    meta = json.loads((bundle_dir / "metadata.json").read_text())
    golden = json.loads((bundle_dir / "golden.json").read_text())
    rows = golden["rows"]
    assert len(rows) == 12 and all(r["input_ids"][0] == meta["tokenizer"]["cls_id"] for r in rows)
    for v in meta["variants"]:
        model = open_model(str(bundle_dir / v["file"]), threads=1)
        got = np.concatenate([model(np.array([r["input_ids"]]), np.ones((1, len(r["input_ids"])), dtype=np.int64),
                                    np.array([r["token_type_ids"]])) for r in rows])
        want = np.array(golden["expected_logits"][v["file"]])
        assert np.abs(got - want).max() <= v["golden"]["atol"]
        assert np.abs(want - np.array(golden["reference_logits"])).max() <= 1e-4


def test_golden_token_ids_match_the_bundled_tokenizer(bundle_dir):
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer.from_file(str(bundle_dir / "tokenizer.json"))
    golden = json.loads((bundle_dir / "golden.json").read_text())
    for r in golden["rows"]:
        assert tok.encode(r["text"]).ids == r["input_ids"]


def test_bundle_md_has_every_snippet(bundle_dir):
    md = (bundle_dir / "BUNDLE.md").read_text()
    for needle in ("onnxruntime", "InferenceSession", "ai_edge_litert.interpreter", "Interpreter(", "```kotlin",
                   "runSignature", "tokenizer.json", "onnx-fp32.onnx", "Random weights"):
        assert needle in md, needle


def test_bundle_without_variants_fails_cleanly(tmp_path, tiny_cache, tiny_teacher):
    from tests.conftest import TINY_YAML, run_yaml, write_yaml

    text = TINY_YAML + """\
  no-files:
    model: "config:tiny"
    stages:
      - finetune: {id: teacher, train: {epochs: 3, batch_size: 32, lr: 3.0e-3, evals_per_epoch: 1}}
      - bundle
"""
    result = run_yaml(write_yaml(tmp_path / "p.yaml", text), "no-files", tiny_cache)
    assert result.exit_code == 1 and "no model files to bundle" in result.error


def test_collect_variants_skips_other_models_and_filters_names():
    from albert_edge.artifacts import Artifact
    from export.bundle import collect_variants

    def art(key, step, inputs, variants=()):
        return Artifact(key, None, {"step": step, "kind": "x", "inputs": inputs, "info": {"variants": list(variants)}})

    teacher = art("t", "teacher", {})
    student = art("s", "distill", {"model": "t", "teacher": "t"})
    exp_t = art("et", "export-teacher", {"model": "t"}, [{"name": "onnx-fp32", "file": "a.onnx"}])
    exp_s = art("es", "export", {"model": "s", "teacher": "t"}, [{"name": "onnx-fp32", "file": "a.onnx"}])
    quant = art(
        "q", "quantize", {"onnx": "es"}, [{"name": "onnx-int8-dynamic", "file": "q.onnx"}, {"name": "tflite-int8", "file": "q.tflite"}]
    )
    earlier = [teacher, student, exp_t, exp_s, quant]
    picked, notes = collect_variants(student, earlier, ("onnx-*",))
    assert [(a.step, v["name"]) for a, v in picked] == [("export", "onnx-fp32"), ("quantize", "onnx-int8-dynamic")]
    assert len(notes) == 1 and "export-teacher" in notes[0]
