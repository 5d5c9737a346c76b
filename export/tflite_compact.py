"""Shrink a multi-signature .tflite file without changing one computed value.

A bucketed file (one signature per sequence length, see export.tflite) shares its weight
*buffers*, but each signature's subgraph still stores its own tensor table: every weight's
name (litert-torch writes the full MLIR location path, ~190 KB per signature for a 4-layer
ALBERT) and every quantised weight's scales and zero points (int64, per channel) are repeated
once per bucket. On sst2-mobile's 5-bucket int8 file that was 1.5 MB of 9.5 MB.

`compact_tflite` rewrites the flatbuffer so that:
- internal tensors get short names (signature and subgraph inputs/outputs keep theirs, so
  `get_signature_runner`, `get_input_details` and every app stay unchanged), like TFLite's
  own `strip_strings` tool;
- identical tensor tables (the same weight, seen from different signatures) and identical
  quantisation tables are written once and referenced from every subgraph, which the
  flatbuffer format allows (an offset may point at a table another offset already points at);
- weight buffers are stored inline, 16-byte aligned as the TFLite converter stores them.
Operators, buffers' bytes, shapes and quantisation values are untouched, so logits are
bit-identical; `tests/test_export_tflite.py` checks that on every signature.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FILE_IDENTIFIER = b"TFL3"
BUFFER_ALIGN = 16  # the converter's force_align for Buffer.data


@dataclass(frozen=True)
class CompactStats:
    """What compaction did: sizes in bytes and how many tables it wrote once instead of N times."""

    bytes_before: int
    bytes_after: int
    tensors: int
    tensor_tables_written: int
    names_shortened: int

    def as_dict(self) -> dict[str, int]:
        return {"bytes_before": self.bytes_before, "bytes_after": self.bytes_after, "tensors": self.tensors,
                "tensor_tables_written": self.tensor_tables_written, "names_shortened": self.names_shortened}


def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # TensorFlow ships the same generated schema
        from tensorflow.lite.python import schema_py_generated as schema  # type: ignore[no-redef]
    return schema


def _array_bytes(value: Any) -> bytes | None:
    return None if value is None else np.asarray(value).tobytes()


def _quant_key(q: Any) -> tuple[Any, ...] | None:
    if q is None or q.details is not None:  # custom quantisation details: never shared
        return None
    return (_array_bytes(q.scale), _array_bytes(q.zeroPoint), _array_bytes(q.min), _array_bytes(q.max),
            q.quantizedDimension, q.detailsType)


def _tensor_key(t: Any) -> tuple[Any, ...] | None:
    if t.sparsity is not None or t.variantTensors is not None:
        return None
    quant = _quant_key(t.quantization)
    if t.quantization is not None and quant is None:
        return None
    return (bytes(t.name or b""), _array_bytes(t.shape), t.type, t.buffer, quant, t.isVariable,
            _array_bytes(t.shapeSignature), t.hasRank, getattr(t, "externalBuffer", 0))


def _sharing_classes(schema: Any) -> tuple[type, type, type, dict[str, int]]:
    """Subclasses of the generated object API whose Pack writes equal tables once per builder."""
    memo: dict[Any, int] = {}
    counts = {"tensor_tables_written": 0}

    class SharedQuant(schema.QuantizationParametersT):  # type: ignore[name-defined,misc]
        def Pack(self, builder: Any) -> int:  # noqa: N802 (generated API's name)
            key = _quant_key(self)
            if key is None:
                return super().Pack(builder)
            if ("q", key) not in memo:
                memo[("q", key)] = super().Pack(builder)
            return memo[("q", key)]

    class SharedTensor(schema.TensorT):  # type: ignore[name-defined,misc]
        def Pack(self, builder: Any) -> int:  # noqa: N802
            key = _tensor_key(self)
            if key is None:
                counts["tensor_tables_written"] += 1
                return super().Pack(builder)
            if ("t", key) not in memo:
                memo[("t", key)] = super().Pack(builder)
                counts["tensor_tables_written"] += 1
            return memo[("t", key)]

    class AlignedBuffer(schema.BufferT):  # type: ignore[name-defined,misc]
        def Pack(self, builder: Any) -> int:  # noqa: N802
            data = None
            if self.data is not None:
                payload = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(payload), BUFFER_ALIGN)
                builder.head = builder.head - len(payload)
                builder.Bytes[builder.head:builder.head + len(payload)] = payload
                builder.vectorNumElems = len(payload)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            return schema.BufferEnd(builder)

    return SharedQuant, SharedTensor, AlignedBuffer, counts


def compact_tflite(src: Path, dst: Path | None = None, *, share: bool = True) -> CompactStats:
    """Rewrite `src` (to `dst`, default in place, atomically) with shared tensor tables and short
    internal names; return what it saved. Raises ValueError for a file that is not a TFLite model.

    share=False writes every tensor table and gives each a name unique in the whole model
    ("s<subgraph>t<index>"): what ai-edge-quantizer needs of its input (it keys tensors by name),
    so a compacted float file can be quantised again (see unique_names_copy).
    """
    import flatbuffers

    schema = _schema()
    src = Path(src)
    dst = Path(dst) if dst is not None else src
    raw = src.read_bytes()
    if len(raw) < 8 or raw[4:8] != FILE_IDENTIFIER:
        raise ValueError(f"{src} is not a TFLite flatbuffer (no {FILE_IDENTIFIER.decode()} identifier)")
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(raw, 0))
    SharedQuant, SharedTensor, AlignedBuffer, counts = _sharing_classes(schema)

    for buf in model.buffers or []:
        if (buf.offset or 0) > 1:  # large-model layout: bytes stored after the flatbuffer
            buf.data = np.frombuffer(raw, dtype=np.uint8, count=buf.size, offset=buf.offset)
        buf.offset, buf.size = 0, 0
        buf.__class__ = AlignedBuffer
    renamed = total = 0
    for g, sg in enumerate(model.subgraphs or []):
        keep = {int(i) for i in list(sg.inputs if sg.inputs is not None else []) + list(sg.outputs if sg.outputs is not None else [])}
        for i, t in enumerate(sg.tensors or []):
            total += 1
            if i not in keep:
                data = model.buffers[t.buffer].data if t.buffer else None
                if not share:
                    short = f"s{g}t{i}".encode()
                elif data is not None and len(data):
                    short = f"w{t.buffer}".encode()  # the same weight gets the same name in every signature
                else:
                    short = f"t{i}".encode()
                renamed += short != t.name
                t.name = short
            if share:
                t.__class__ = SharedTensor
                if t.quantization is not None:
                    t.quantization.__class__ = SharedQuant

    builder = flatbuffers.Builder(len(raw) + (1 << 20))
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    out = bytes(builder.Output())
    dst.parent.mkdir(parents=True, exist_ok=True)
    # a plain exclusive create, not mkstemp: mkstemp's 0600 would leave .tflite files unreadable
    # to the group and other users while every other artifact file follows the umask (0644)
    tmp = dst.parent / f".compact-{uuid.uuid4().hex}.tflite"
    try:
        with open(tmp, "xb") as fh:
            fh.write(out)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    written = counts["tensor_tables_written"] if share else total
    return CompactStats(len(raw), len(out), total, written, renamed)


def unique_names_copy(src: Path, dst: Path) -> Path:
    """A copy of `src` in which every tensor has its own table and a model-wide unique name
    (the form ai-edge-quantizer accepts); returns dst."""
    compact_tflite(src, dst, share=False)
    return Path(dst)
