"""BUNDLE.md's Kotlin classify() runs the bucket's signature by name; its Python twin (the same
steps through LiteRT's signature API) reproduces the golden logits of every bundled .tflite
file, so the app code a user copies is the code that was checked."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

pytest.importorskip("litert_torch")
Interpreter = pytest.importorskip("ai_edge_litert.interpreter").Interpreter

from tests.conftest import TINY_YAML, run_yaml, write_yaml  # noqa: E402

BUNDLE_YAML = TINY_YAML + """\
      - export_tflite: {buckets: [32, 64], parity_rows: 8}
      - bundle: {golden_rows: 8}
"""


@pytest.fixture(scope="module")
def bundle(tiny_teacher, tiny_cache, tmp_path_factory):
    y = write_yaml(tmp_path_factory.mktemp("snippet") / "pipelines.yaml", BUNDLE_YAML)
    result = run_yaml(y, "tiny", tiny_cache)
    assert result.exit_code == 0, result.error
    return result.steps[-1].artifact.path / "bundle"


def kotlin_twin(interp: Any, ids: list[int], type_ids: list[int]) -> np.ndarray:
    """BUNDLE.md's classify(), step for step: bucket from the signature keys, signature by name,
    inputs by signature input name and dtype, the `logits` output."""
    buckets = sorted(int(k.removeprefix("seq_")) for k in interp.get_signature_list() if k.startswith("seq_"))
    seq = next((b for b in buckets if len(ids) <= b), buckets[-1])
    key = f"seq_{seq}"
    n = min(len(ids), seq)
    runner = interp.get_signature_runner(key)
    details = runner.get_input_details()

    def feed(name: str) -> np.ndarray:
        v = [0 if i >= n else 1 if "mask" in name else type_ids[i] if ("type" in name or "segment" in name) else ids[i] for i in range(seq)]
        return np.array([v], dtype=np.int64 if details[name]["dtype"] == np.int64 else np.int32)

    outs = list(runner.get_output_details())
    out_name = next((o for o in outs if "logits" in o), sorted(outs)[0])
    return runner(**{name: feed(name) for name in details})[out_name][0]


def test_kotlin_calls_the_bucket_signature(bundle):
    md = (bundle / "BUNDLE.md").read_text()
    kotlin = md.split("```kotlin", 1)[1].split("```", 1)[0]
    assert "interpreter.runSignature(inputs, mapOf(outName to logits), key)" in kotlin
    assert 'val key = "seq_$seq"' in kotlin and "buckets.firstOrNull { ids.size <= it }" in kotlin
    assert "runForMultipleInputsOutputs" not in kotlin


def test_python_twin_reproduces_golden_logits_of_every_tflite_file(bundle):
    meta = json.loads((bundle / "metadata.json").read_text())
    golden = json.loads((bundle / "golden.json").read_text())
    files = [v for v in meta["variants"] if v["format"] == "tflite"]
    assert files, "the bundle has no .tflite file"
    for v in files:
        interp = Interpreter(model_path=str(bundle / v["file"]), num_threads=1)
        assert sorted(interp.get_signature_list()) == sorted(v["signatures"].values()), v["file"]
        got = np.stack([kotlin_twin(interp, r["input_ids"], r.get("token_type_ids") or [0] * len(r["input_ids"])) for r in golden["rows"]])
        want = np.asarray(golden["expected_logits"][v["file"]], dtype=np.float32)
        tol = v["golden"]
        if tol.get("atol") is not None:
            assert float(np.abs(got - want).max()) <= tol["atol"], v["file"]
        assert float((got.argmax(-1) == want.argmax(-1)).mean()) >= tol.get("min_agreement", 1.0), v["file"]
