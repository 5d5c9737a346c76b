"""Content-addressed artifact store. An artifact is a directory of files plus `manifest.json`.

Writes are atomic: a stage writes into `tmp-*`, the manifest is written last, then the
directory is renamed into place. A directory without a valid manifest, or whose files no
longer match their sha256, is never used: it is moved aside and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import os
import platform
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
TRACKED_LIBRARIES = (
    "torch", "transformers", "onnx", "onnxruntime", "onnxscript", "ai-edge-litert", "litert-torch",
    "tensorflow", "tflite-runtime", "neural-compressor", "numpy", "sentencepiece", "tokenizers",
)


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


@dataclass(frozen=True)
class Artifact:
    """A completed, verified artifact directory."""

    key: str
    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def step(self) -> str:
        return self.manifest["step"]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.manifest.get("metrics", {})

    @property
    def info(self) -> dict[str, Any]:
        return self.manifest.get("info", {})

    @property
    def model_dir(self) -> Path:
        """The transformers model directory of a `model` artifact."""
        return self.path / "model"

    def variants(self) -> list[dict[str, Any]]:
        """Model files an export/quantize artifact holds: [{name, format, precision, file, ...}]."""
        return list(self.info.get("variants", []))


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def dir_for(self, step: str, key: str) -> Path:
        return self.root / f"{step}-{key[:16]}"

    def get(self, step: str, key: str, verify: bool = True) -> tuple[Artifact | None, str]:
        """(artifact, "") if a valid one exists, else (None, why not)."""
        d = self.dir_for(step, key)
        if not d.exists():
            return None, "not built"
        mpath = d / MANIFEST
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            self._quarantine(d)
            return None, "manifest missing or unreadable (incomplete write); rebuilding"
        if manifest.get("key") != key:
            self._quarantine(d)
            return None, "manifest key mismatch; rebuilding"
        if verify:
            bad = self.verify(d, manifest)
            if bad:
                self._quarantine(d)
                return None, f"{bad} no longer matches its sha256; rebuilding"
        return Artifact(key, d, manifest), ""

    @staticmethod
    def verify(d: Path, manifest: dict[str, Any]) -> str:
        """'' if every file matches the manifest, else the first file that does not."""
        expected = manifest.get("files", {})
        for rel, digest in expected.items():
            p = d / rel
            if not p.is_file() or sha256_file(p) != digest:
                return rel
        extra = set(file_hashes(d)) - set(expected)
        return sorted(extra)[0] if extra else ""

    def _quarantine(self, d: Path, where: str = "corrupt") -> None:
        """Move an unusable (or superseded) artifact aside: never used again, never deleted."""
        dest = self.root / where / f"{d.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(d, dest)

    def new_tmp(self, step: str) -> Path:
        d = self.root / "tmp" / f"{step}-{uuid.uuid4().hex[:8]}"
        d.mkdir(parents=True)
        return d

    def commit(self, tmp: Path, step: str, key: str, manifest: dict[str, Any]) -> Artifact:
        """Hash files, write the manifest last, fsync, rename into place."""
        manifest = dict(manifest, key=key, step=step, files=file_hashes(tmp))
        mpath = tmp / MANIFEST
        with mpath.open("w") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
            fh.flush()
            os.fsync(fh.fileno())
        final = self.dir_for(step, key)
        if final.exists():  # a forced rebuild: keep the old one aside rather than delete work
            self._quarantine(final, "replaced")
        os.replace(tmp, final)
        return Artifact(key, final, manifest)

    def clean_tmp(self) -> int:
        """Remove half-written directories left by killed runs."""
        t = self.root / "tmp"
        n = 0
        if t.exists():
            for d in t.iterdir():
                shutil.rmtree(d, ignore_errors=True)
                n += 1
        return n

    def all(self) -> Iterator[Artifact]:
        for d in sorted(self.root.iterdir()):
            m = d / MANIFEST
            if d.is_dir() and m.is_file():
                try:
                    manifest = json.loads(m.read_text())
                except json.JSONDecodeError:
                    continue
                yield Artifact(manifest.get("key", ""), d, manifest)
