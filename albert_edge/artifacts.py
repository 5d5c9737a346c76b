"""Content-addressed artifact store. An artifact is a directory of files plus `manifest.json`
and `manifest.sha256` (the manifest's own digest, so its metrics are verified like its files).

Writes are atomic: a stage writes into `tmp/<artifact>~<lease token>`, the manifest and its
digest are written last, then the directory is renamed into place. A directory without a valid
manifest, whose manifest does not match its digest, or whose files no longer match their sha256,
is never used: it is moved aside and rebuilt. Runs sharing the store build a key only while
holding its lease (albert_edge.lease), so a key is built once and leftovers are removed only
when their owner is gone.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import json
import logging
import os
import platform
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albert_edge import lease as leases

MANIFEST = "manifest.json"
MANIFEST_DIGEST = "manifest.sha256"  # `sha256sum -c manifest.sha256` checks it by hand
QUARANTINE_DIRS = ("corrupt", "replaced")
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
        if p.is_file() and str(p.relative_to(root)) not in (MANIFEST, MANIFEST_DIGEST)
    }


def _digest_line(manifest_bytes: bytes) -> str:
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST}\n"


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


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

    def lease_path(self, step: str, key: str) -> Path:
        return self.root / "leases" / f"{self.dir_for(step, key).name}.lease"

    def lease(self, step: str, key: str, log: logging.Logger, wait: float | None = None) -> leases.Lease:
        """Hold the key's lease, waiting (logged to `log`) while another live run builds it."""
        return leases.acquire(self.lease_path(step, key), what=step, log=log, wait=wait)

    def check(self, step: str, key: str, verify: bool = True) -> tuple[Artifact | None, str]:
        """(artifact, "") if a valid one exists, else (None, why not). Reads only."""
        d = self.dir_for(step, key)
        if not d.exists():
            return None, "not built"
        try:
            raw = (d / MANIFEST).read_bytes()
            manifest = json.loads(raw)
        except (OSError, ValueError):
            return None, "manifest missing or unreadable (incomplete write); rebuilding"
        try:
            sidecar = (d / MANIFEST_DIGEST).read_text()
        except OSError:
            return None, f"no {MANIFEST_DIGEST} (written by an older albert-edge, its metrics unverifiable); rebuilding"
        if sidecar != _digest_line(raw):
            return None, f"{MANIFEST} no longer matches its sha256 ({MANIFEST_DIGEST}); rebuilding"
        if not isinstance(manifest, dict) or manifest.get("key") != key:
            return None, "manifest key mismatch; rebuilding"
        if verify:
            bad = self.verify(d, manifest)
            if bad:
                return None, f"{bad} no longer matches its sha256; rebuilding"
        return Artifact(key, d, manifest), ""

    def get(self, step: str, key: str, verify: bool = True, held: leases.Lease | None = None) -> tuple[Artifact | None, str]:
        """(artifact, "") if a valid one exists, else (None, why not). An invalid directory is
        moved aside, but only by the key's lease holder (`held`, or a lease taken here without
        waiting): another run may be replacing it right now."""
        art, why = self.check(step, key, verify)
        if art is not None or not self.dir_for(step, key).exists():
            return art, why
        try:
            lease = held or leases.try_acquire(self.lease_path(step, key))
        except OSError:  # a read-only cache: report, move nothing
            lease = None
        if lease is None:
            return None, f"{why} (left in place: another run holds its lease, or the cache is read-only)"
        try:
            art, why = self.check(step, key, verify)  # it may have been rebuilt meanwhile
            if art is None and self.dir_for(step, key).exists():
                self._quarantine(self.dir_for(step, key))
            return art, why
        finally:
            if held is None:
                lease.release()

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

    def new_tmp(self, step: str, key: str, lease: leases.Lease) -> Path:
        """A private directory to build `key` in, named after the lease that owns it."""
        d = self.root / "tmp" / f"{self.dir_for(step, key).name}~{lease.token}"
        d.mkdir(parents=True)
        return d

    def commit(self, tmp: Path, step: str, key: str, manifest: dict[str, Any]) -> Artifact:
        """Hash files, write the manifest and its digest last, fsync, rename into place.
        The caller holds the key's lease."""
        manifest = dict(manifest, key=key, step=step, files=file_hashes(tmp))
        raw = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        _write_synced(tmp / MANIFEST, raw)
        _write_synced(tmp / MANIFEST_DIGEST, _digest_line(raw).encode())
        final = self.dir_for(step, key)
        if final.exists():  # a forced rebuild: keep the old one aside rather than delete work
            self._quarantine(final, "replaced")
        os.replace(tmp, final)
        return Artifact(key, final, json.loads(raw))

    def _tmp_owner_alive(self, d: Path) -> bool:
        base, sep, token = d.name.rpartition("~")
        if not sep:
            return False  # an older albert-edge's temp dir: no owner recorded
        path = self.root / "leases" / f"{base}.lease"
        owner = leases.read_owner(path)
        return owner is not None and owner.token == token and not leases.is_stale(path, owner)

    def clean_tmp(self) -> int:
        """Remove half-written directories whose builder is gone (killed, or its lease taken
        over); another live run's directory is left alone. Also drops dead runs' lease files."""
        n = 0
        t = self.root / "tmp"
        if t.exists():
            for d in t.iterdir():
                if not self._tmp_owner_alive(d):
                    shutil.rmtree(d, ignore_errors=True)
                    n += 1
        ldir = self.root / "leases"
        if ldir.exists():
            for f in ldir.glob("*.lease"):
                leases.break_if_stale(f)
        return n

    def live_leases(self) -> list[tuple[Path, leases.Owner | None]]:
        """Leases held by live runs (what `clean --all` must not pull the cache from under)."""
        ldir = self.root / "leases"
        found = []
        for f in sorted(ldir.glob("*.lease")) if ldir.exists() else []:
            owner = leases.read_owner(f)
            if not leases.is_stale(f, owner):
                found.append((f, owner))
        return found

    def clean_quarantine(self) -> list[Path]:
        """Remove artifacts moved aside (corrupt, replaced): nothing reads them again."""
        removed = []
        for where in QUARANTINE_DIRS:
            d = self.root / where
            if d.exists():
                shutil.rmtree(d)
                removed.append(d)
        return removed

