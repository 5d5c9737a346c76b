"""One model file an artifact holds: the typed record behind every `variants` list.

The export, quantize and bundle stages make these records and the bundle, quantize and
benchmark code reads them; manifests (`info.variants`) and a bundle's metadata.json hold their
flat JSON form (`to_dict`), which `from_dict` reads back. Fields every variant has are typed
here; what only one format or stage adds (ONNX exporter and opset, TFLite signatures, int8
calibration and fallback, a bundle file's source step and I/O) stays in `details`, flattened
into the same JSON object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Always written, None when not measured; the optional ones are written only when set.
_ALWAYS = ("name", "format", "precision", "file", "size_bytes", "sha256", "accuracy", "val_accuracy", "agreement",
           "max_abs_diff", "parity_rows", "parity_split")
_OPTIONAL = ("verdict", "buckets")
# Written by older versions: one fixed-shape file per sequence length, never set by this one.
_RETIRED = ("seq_len",)


@dataclass(frozen=True)
class ModelVariant:
    """A model file with what was measured about it."""

    name: str  # e.g. onnx-int8-static, tflite-fp16
    format: str  # onnx | tflite
    precision: str  # fp32 | fp16 | int8-dynamic | int8-static
    file: str  # relative to the artifact directory (in metadata.json: to the bundle directory)
    size_bytes: int | None = None
    sha256: str | None = None
    accuracy: float | None = None  # on the eval split (reported only)
    val_accuracy: float | None = None  # on the held-out validation rows (what choices are made on)
    agreement: float | None = None  # argmax agreement with the model it was made from
    max_abs_diff: float | None = None  # largest logit difference from that model (None: not a parity check)
    parity_rows: int | None = None
    parity_split: str | None = None
    verdict: Mapping[str, Any] | None = None  # albert_edge.budget.Verdict.as_dict()
    buckets: tuple[int, ...] = ()  # fixed-shape signatures, smallest first; () for a dynamic-shape file
    details: Mapping[str, Any] = field(default_factory=dict)  # format- and stage-specific fields

    @classmethod
    def of_file(cls, name: str, fmt: str, precision: str, path: Path, root: Path, **fields: Any) -> ModelVariant:
        """The record of `path` (size and sha256 read from the file), named relative to `root`;
        keyword fields that are not record fields go to `details`."""
        from albert_edge.artifacts import sha256_file

        return cls.from_dict({"name": name, "format": fmt, "precision": precision, "file": str(Path(path).relative_to(root)),
                              "size_bytes": Path(path).stat().st_size, "sha256": sha256_file(Path(path)), **fields})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelVariant:
        """Read the flat JSON form (a manifest's or metadata.json's variant entry)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"details"}
        known = {k: v for k, v in d.items() if k in names}
        if known.get("buckets") is not None:
            known["buckets"] = tuple(sorted(int(b) for b in known["buckets"]))
        else:
            known.pop("buckets", None)
        details = {k: v for k, v in d.items() if k not in names and k not in _RETIRED}
        return cls(**known, details=details)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON form: the typed fields, then `details`."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _ALWAYS}
        if self.verdict is not None:
            out["verdict"] = dict(self.verdict)
        if self.buckets:
            out["buckets"] = list(self.buckets)
        out.update(self.details)
        return out

    def with_fields(self, **fields: Any) -> ModelVariant:
        """A copy with `fields` set: record fields replaced, the rest added to `details`."""
        names = {f.name for f in dataclasses.fields(self)} - {"details"}
        typed = {k: v for k, v in fields.items() if k in names}
        if "buckets" in typed:
            typed["buckets"] = tuple(sorted(int(b) for b in typed["buckets"] or ()))
        extra = {k: v for k, v in fields.items() if k not in names}
        return dataclasses.replace(self, **typed, details={**self.details, **extra})

    @property
    def passed(self) -> bool | None:
        """The budget's verdict on this file (None: not judged)."""
        return None if self.verdict is None else bool(self.verdict.get("passed"))


def variants_of(art: Any) -> list[ModelVariant]:
    """The records an artifact's manifest lists (`info.variants`)."""
    return [ModelVariant.from_dict(v) for v in art.variants()]


__all__ = ["ModelVariant", "variants_of"]
