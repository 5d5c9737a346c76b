"""On-device test suite setup: `pytest device_tests --bundle DIR` (or ALBERT_EDGE_BUNDLE=DIR).

Needs only numpy, pytest and one runtime on the device; the edge_runtime package sits beside
this directory (in the repository and in what run_device_tests pushes).
Reads what the bundle stage writes: metadata.json (`variants` with file, sha256, size_bytes,
buckets, precision and `golden` tolerance; `buckets`; `tokenizer.files`; `golden.file`) and
golden.json (`rows` of text/input_ids/token_type_ids/label, `expected_logits` per file: the
host's run of that very file, which the device must reproduce within the tolerance).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(_HERE)]  # `conftest` for test_bundle.py; the edge_runtime package

GOLDEN_FILE = "golden.json"


def pytest_addoption(parser: Any) -> None:
    parser.addoption("--bundle", default=os.environ.get("ALBERT_EDGE_BUNDLE"), help="bundle directory (holds metadata.json)")
    parser.addoption("--runtime", default=None, help="force a runtime (onnxruntime, litert, tflite-runtime)")


def _bundle_dir(config: Any) -> Path | None:
    value = config.getoption("--bundle")
    return Path(value).expanduser().resolve() if value else None


def read_metadata(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "metadata.json").read_text())


def variants_of(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return list(meta.get("variants") or meta.get("models") or [])


def pytest_generate_tests(metafunc: Any) -> None:
    """One test per model file of the bundle (ids are the variant names)."""
    if "variant" not in metafunc.fixturenames:
        return
    bundle = _bundle_dir(metafunc.config)
    items = variants_of(read_metadata(bundle)) if bundle and (bundle / "metadata.json").is_file() else []
    metafunc.parametrize("variant", items, ids=[v.get("name", v["file"]) for v in items])


@pytest.fixture(scope="session")
def bundle(request: Any) -> Path:
    d = _bundle_dir(request.config)
    if d is None:
        pytest.skip("no bundle: pass --bundle DIR (or set ALBERT_EDGE_BUNDLE)")
    if not (d / "metadata.json").is_file():
        pytest.fail(f"{d}: no metadata.json; is this a bundle directory?")
    return d


@pytest.fixture(scope="session")
def metadata(bundle: Path) -> dict[str, Any]:
    return read_metadata(bundle)


@pytest.fixture(scope="session")
def forced_runtime(request: Any) -> str | None:
    return request.config.getoption("--runtime")


def load_golden(bundle: Path, meta: dict[str, Any]) -> dict[str, Any] | None:
    """golden.json (or the file metadata names); None if the bundle has none."""
    ref = meta.get("golden")
    name = ref.get("file", GOLDEN_FILE) if isinstance(ref, dict) else (ref or GOLDEN_FILE)
    p = bundle / name
    return json.loads(p.read_text()) if p.is_file() else None


def tolerance(meta: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    """The variant's own `golden` tolerance, else the bundle's tolerance for its precision."""
    if isinstance(variant.get("golden"), dict):
        return dict(variant["golden"])
    by_prec = (meta.get("golden") or {}).get("tolerance_by_precision", {}) if isinstance(meta.get("golden"), dict) else {}
    prec = variant.get("precision", "fp32")
    tol = by_prec.get(prec) or by_prec.get("int8" if prec.startswith("int8") else prec)
    if tol is None:
        pytest.fail(f"{variant.get('name')}: the bundle gives no golden tolerance for precision {prec!r}")
    return dict(tol)


@pytest.fixture(scope="session")
def golden(bundle: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    g = load_golden(bundle, metadata)
    if g is None:
        pytest.fail(f"{bundle}: no golden vectors ({GOLDEN_FILE})")
    return g
