"""Checks a bundle where it will run: files intact, every model loads, golden vectors match within
the bundle's tolerances, bucket selection is right, and the tokenizer agrees with the host's.

    pytest device_tests --bundle path/to/bundle [--runtime litert]
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tolerance, variants_of

from edge_runtime import ModelLoadError, open_model, pick_bucket, runtime_available, runtime_for


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _open(bundle: Path, variant: dict[str, Any], runtime: str | None) -> Any:
    path = str(bundle / variant["file"])
    try:
        rt = runtime_for(path, runtime if runtime and variant.get("format", "") in (runtime, _format_of(runtime)) else None)
    except ModelLoadError as err:
        pytest.skip(str(err))
    problem = runtime_available(rt)
    if problem:
        pytest.skip(f"runtime unavailable: {problem}")
    return open_model(path, rt, threads=1)


def _format_of(runtime: str) -> str:
    return "onnx" if runtime == "onnxruntime" else "tflite"


def test_bundle_lists_models(metadata):
    assert variants_of(metadata), "metadata.json lists no model files (variants)"


def test_file_present_and_sha256(bundle, variant):
    path = bundle / variant["file"]
    assert path.is_file(), f"{variant['file']} is missing from the bundle"
    if "size_bytes" in variant:
        assert path.stat().st_size == variant["size_bytes"], f"{variant['file']}: size differs from metadata"
    assert "sha256" in variant, f"{variant.get('name')}: metadata has no sha256 for this file"
    assert _sha256(path) == variant["sha256"], f"{variant['file']}: sha256 mismatch (corrupt or altered file)"


def test_model_loads(bundle, variant, forced_runtime):
    model = _open(bundle, variant, forced_runtime)
    if variant.get("buckets"):
        assert tuple(model.buckets) == tuple(sorted(variant["buckets"])), (
            f"file has buckets {model.buckets}, metadata says {variant['buckets']}"
        )


def _rows(golden: dict[str, Any]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Each golden example at its real length, as int64 [1, len] arrays (mask all ones)."""
    out = []
    for row in golden["rows"]:
        ids = np.asarray([row["input_ids"]], dtype=np.int64)
        tt = np.asarray([row.get("token_type_ids") or [0] * ids.shape[1]], dtype=np.int64)
        out.append((ids, np.ones_like(ids), tt))
    return out


def _expected(golden: dict[str, Any], variant: dict[str, Any]) -> np.ndarray:
    """The host's logits for this very file (what the device must reproduce)."""
    per = golden.get("expected_logits") or {}
    if variant["file"] not in per:
        pytest.fail(f"golden.json has no expected_logits for {variant['file']}")
    return np.asarray(per[variant["file"]], dtype=np.float32)


def test_golden_vectors(bundle, variant, metadata, golden, forced_runtime):
    model = _open(bundle, variant, forced_runtime)
    expected = _expected(golden, variant)
    tol = tolerance(metadata, variant)
    # fixed-shape files pad (or truncate) each row to their length, as the host run did
    got_a = np.stack([model(ids, mask, tt)[0] for ids, mask, tt in _rows(golden)])
    want_a = expected
    assert got_a.shape == want_a.shape, f"{variant['file']}: logits shape {got_a.shape}, golden {want_a.shape}"
    agreement = float((got_a.argmax(-1) == want_a.argmax(-1)).mean())
    diff = float(np.abs(got_a - want_a).max())
    if tol.get("atol") is not None:
        assert diff <= tol["atol"], f"{variant.get('name')}: max |logit diff| {diff:.3g} > atol {tol['atol']:g}"
    assert agreement >= tol.get("min_agreement", 1.0), (
        f"{variant.get('name')}: argmax agreement {agreement:.3f} < {tol.get('min_agreement')}"
    )


def test_bucket_selection(metadata):
    buckets = metadata.get("buckets") or sorted({b for v in variants_of(metadata) for b in (v.get("buckets") or [])})
    if not buckets:
        pytest.skip("bundle has only dynamic-length models (no buckets)")
    top = max(buckets)
    for n in range(1, top + 8):
        b = pick_bucket(n, buckets)
        assert b in buckets
        if n <= top:
            assert b >= n and all(x < n for x in buckets if x < b), f"length {n} -> bucket {b}: not the smallest that fits"
        else:
            assert b == top


def _tokenizer(bundle: Path) -> Any:
    """The bundle's tokenizer through whichever tokenizer library this device has."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(bundle))
        return lambda text: tok(text)["input_ids"]
    except ImportError:
        pass
    if (bundle / "tokenizer.json").is_file():
        try:
            from tokenizers import Tokenizer

            t = Tokenizer.from_file(str(bundle / "tokenizer.json"))
            return lambda text: t.encode(text).ids
        except ImportError:
            pass
    pytest.skip("no tokenizer library on this device (transformers or tokenizers)")


def test_tokenizer_parity(bundle, metadata, golden):
    encode = _tokenizer(bundle)
    rows = [r for r in golden["rows"] if "text" in r]
    if not rows:
        pytest.skip("golden rows carry no texts")
    max_len = metadata.get("max_seq_len", 512)
    for row in rows:
        got = list(encode(str(row["text"])))[:max_len]
        want = list(row["input_ids"])
        if len(want) == max_len:  # truncated on the host: the last token is [SEP] again
            got = got[: max_len - 1] + want[-1:]
        assert got == want, f"tokenizer differs on {str(row['text'])[:60]!r}: {got[:12]} vs {want[:12]}"
