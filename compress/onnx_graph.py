"""ONNX graph helpers for int8 work: pre-optimise before quantising, and audit which MatMuls
ended up int8.

Why pre-optimise: an ALBERT export reaches its one shared layer's weights through Identity
(TorchScript exporter) or Transpose (dynamo exporter) nodes. ONNX Runtime's quantizer only
quantises a MatMul whose weight is an initializer, so without ORT's basic-level constant
folding it quantises a handful of MatMuls and leaves the encoder float.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Ops that are an int8 matrix product by themselves.
INT8_MATMUL_OPS = {"MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearMatMul"}
# Ops that pass a (possibly quantised) weight through unchanged in meaning.
_PASS_THROUGH = {"Identity", "Transpose", "Reshape", "Cast", "Squeeze", "Unsqueeze"}
_INT8_TYPES = {2, 3}  # onnx.TensorProto.UINT8, INT8


def preoptimize(src: Path, dst: Path) -> Path:
    """Write `src` after ONNX Runtime's basic graph optimisations (constant folding and
    redundant-node removal), with stale `value_info` dropped so the quantizer re-infers shapes.
    Only standard ONNX ops come out, so the result still runs on any runtime."""
    import onnx

    from edge_runtime.models import ort_session

    ort_session(str(src), 1, "basic", save_to=str(dst))
    model = onnx.load(str(dst))
    del model.graph.value_info[:]
    onnx.save(model, str(dst))
    return dst


@dataclass
class _Graph:
    producers: dict[str, Any]
    initializers: dict[str, Any]

    @classmethod
    def of(cls, model: Any) -> _Graph:
        prods = {out: n for n in model.graph.node for out in n.output}
        return cls(prods, {i.name: i for i in model.graph.initializer})

    def source(self, name: str) -> tuple[str, Any]:
        """Follow pass-through nodes back to the tensor's origin: ('init', tensor),
        ('const', node), ('dq', DequantizeLinear node) or ('act', None)."""
        seen = 0
        while seen < 32:
            seen += 1
            if name in self.initializers:
                return "init", self.initializers[name]
            node = self.producers.get(name)
            if node is None:
                return "act", None
            if node.op_type == "Constant":
                return "const", node
            if node.op_type == "DequantizeLinear":
                return "dq", node
            if node.op_type not in _PASS_THROUGH:
                return "act", None
            name = node.input[0]
        return "act", None

    def is_weight(self, name: str) -> bool:
        kind, obj = self.source(name)
        if kind in ("init", "const"):
            return True
        return kind == "dq" and self.source(obj.input[0])[0] in ("init", "const")

    def is_int8_weight(self, name: str) -> bool:
        kind, obj = self.source(name)
        if kind == "init":
            return obj.data_type in _INT8_TYPES
        if kind != "dq":
            return False
        k2, src = self.source(obj.input[0])
        return k2 == "init" and src.data_type in _INT8_TYPES

    def is_dequantized(self, name: str) -> bool:
        return self.source(name)[0] == "dq"


@dataclass(frozen=True)
class MatMulReport:
    """Weight MatMuls (the encoder's linear layers, incl. the embedding projection) and
    activation MatMuls (attention scores and context), and which of them run in int8."""

    weight_total: int
    weight_int8: int
    float_weight_nodes: tuple[str, ...]
    activation_total: int
    activation_int8: int
    op_counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "weight_matmuls": self.weight_total, "weight_matmuls_int8": self.weight_int8,
            "float_weight_matmuls": list(self.float_weight_nodes),
            "activation_matmuls": self.activation_total, "activation_matmuls_int8": self.activation_int8,
        }


def matmul_report(model_or_path: Any) -> MatMulReport:
    """Count MatMuls (and Gemms: pooler, classifier) by kind and precision. Int8 means
    MatMulInteger, DynamicQuantizeMatMul, QLinearMatMul, or a MatMul/Gemm fed by
    DequantizeLinear of an int8 weight (QDQ)."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    g = _Graph.of(model)
    w_total = w_int8 = a_total = a_int8 = 0
    float_nodes: list[str] = []
    for node in model.graph.node:
        op = node.op_type
        if op in INT8_MATMUL_OPS:
            b = node.input[3] if op == "QLinearMatMul" else node.input[1]
            if g.is_weight(b):
                w_total += 1
                w_int8 += 1
            else:
                a_total += 1
                a_int8 += 1
        elif op in ("MatMul", "Gemm"):
            a, b = node.input[0], node.input[1]
            if g.is_weight(b) or g.is_weight(a):
                w_total += 1
                if g.is_int8_weight(b) or g.is_int8_weight(a):
                    w_int8 += 1
                else:
                    float_nodes.append(node.name)
            else:
                a_total += 1
                a_int8 += int(g.is_dequantized(a) and g.is_dequantized(b))
    ops = Counter(n.op_type for n in model.graph.node)
    return MatMulReport(w_total, w_int8, tuple(float_nodes), a_total, a_int8, dict(ops))


def initializer_bytes(model_or_path: Any) -> dict[str, int]:
    """Bytes of initializer data by element type name (shows where a file's size goes; a shared weight counts once)."""
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path
    out: Counter[str] = Counter()
    for init in model.graph.initializer:
        arr = onnx.numpy_helper.to_array(init)
        out[str(arr.dtype)] += arr.nbytes
    return dict(out)
