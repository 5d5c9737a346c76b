"""Which weight matmuls of a .tflite file run on int8 weights: the same audit ONNX files get
(compress.onnx_graph.matmul_report), so an int8 file that silently left layers float is caught.

A weight matmul is a FULLY_CONNECTED or BATCH_MATMUL whose weight operand is a constant
(a tensor with buffer data), directly or through a DEQUANTIZE of a constant. Weights are
counted once per buffer: a bucketed file's signatures share them.

Each weight is named by its place in the graph, `<OP>#<k>`: the k-th weight in order of first
use (signatures in file order, operators in order). Tensor names cannot serve: a compacted
file names a weight after its buffer index, which quantising renumbers, while quantising and
compacting keep the operators' order, so the fp32 file and every int8 file made from it (the
keep-float fallback's included) call the same weight by the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compress.onnx_graph import MatMulReport
from export.tflite_compact import _schema

_INT8_TYPES = ("INT8", "UINT8", "INT4")


@dataclass(frozen=True)
class WeightMatmul:
    """One weight tensor and the matmuls that read it, over every signature.

    scopes: the output tensor name of each of those operators, the names ai-edge-quantizer's
    recipes match an operator by (its "scope"); only unique across signatures in a file made
    by export.tflite_compact.unique_names_copy.
    """

    name: str  # <OP>#<k>, stable across precisions (see the module docstring)
    op: str
    int8: bool
    buffer: int
    tensor: str  # the weight tensor's name in this file
    shape: tuple[int, ...]
    dtype: str
    scopes: tuple[str, ...]


def _text(name: object) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def weight_matmuls(path: str | Path) -> tuple[list[WeightMatmul], int, dict[str, int]]:
    """Every weight matmul of the file (see WeightMatmul), the number of activation matmuls
    (attention scores and context), and the operator counts."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    buffers = model.buffers or []
    found: dict[int, dict] = {}  # buffer index -> fields, in order of first use
    activation_total = 0
    ops: dict[str, int] = {}
    for sg in model.subgraphs or []:
        tensors = sg.tensors or []
        producer: dict[int, tuple[str, list[int]]] = {}
        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), str(code.builtinCode))
            ops[name] = ops.get(name, 0) + 1
            for out in op.outputs if op.outputs is not None else []:
                producer[int(out)] = (name, [int(i) for i in (op.inputs if op.inputs is not None else [])])

        def constant(idx: int, tensors: list = tensors) -> int | None:
            """The buffer index of a constant tensor, or None for an activation."""
            if idx < 0:
                return None
            b = tensors[idx].buffer
            has_data = 0 < b < len(buffers) and (buffers[b].data is not None and len(buffers[b].data) > 0 or buffers[b].size > 0)
            return b if has_data else None

        for op in sg.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "")
            if name not in ("FULLY_CONNECTED", "BATCH_MATMUL"):
                continue
            ins = [int(i) for i in op.inputs]
            w = ins[1]
            source = w
            if constant(w) is None and w in producer and producer[w][0] == "DEQUANTIZE":
                source = producer[w][1][0]
            buf = constant(source)
            if buf is None:
                activation_total += 1
                continue
            t = tensors[source]
            entry = found.setdefault(buf, {"op": name, "dtype": type_names.get(t.type, ""), "tensor": _text(t.name),
                                           "shape": tuple(int(d) for d in (t.shape if t.shape is not None else [])), "scopes": []})
            entry["scopes"].extend(_text(tensors[int(o)].name) for o in (op.outputs if op.outputs is not None else []) if int(o) >= 0)
    weights = [WeightMatmul(f"{e['op']}#{k}", e["op"], e["dtype"] in _INT8_TYPES, buf, e["tensor"], e["shape"], e["dtype"],
                            tuple(e["scopes"])) for k, (buf, e) in enumerate(found.items())]
    return weights, activation_total, ops


def matmul_report(path: str | Path) -> MatMulReport:
    """Weight matmuls by precision (int8 or float) and activation matmuls, over every subgraph;
    float weights are listed by their WeightMatmul.name."""
    weights, activation_total, ops = weight_matmuls(path)
    float_names = tuple(w.name for w in weights if not w.int8)
    return MatMulReport(len(weights), sum(w.int8 for w in weights), float_names, activation_total, 0, ops)


def unexpected_float(path: str | Path, kept_float: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Float weight matmuls of an int8 file that nobody asked to keep float: empty for a
    complete int8 file, and for a fallback file whose float weights are exactly `kept_float`
    (names as matmul_report gives them); any other float weight matmul is listed."""
    return [n for n in matmul_report(path).float_weight_nodes if n not in kept_float]
