"""Which weight matmuls of a .tflite file run on int8 weights: the same audit ONNX files get
(compress.onnx_graph.matmul_report), so an int8 file that silently left layers float is caught.

A weight matmul is a FULLY_CONNECTED or BATCH_MATMUL whose weight operand is a constant
(a tensor with buffer data), directly or through a DEQUANTIZE of a constant. Weights are
counted once per buffer: a bucketed file's signatures share them.
"""

from __future__ import annotations

from pathlib import Path

from compress.onnx_graph import MatMulReport
from export.tflite_compact import _schema

_INT8_TYPES = ("INT8", "UINT8", "INT4")


def matmul_report(path: str | Path) -> MatMulReport:
    """Weight matmuls by precision (int8 or float) and activation matmuls, over every subgraph."""
    schema = _schema()
    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    buffers = model.buffers or []
    weights: dict[int, tuple[bool, str]] = {}  # buffer index -> (int8?, name)
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
            dtype = type_names.get(tensors[source].type, "")
            tname = tensors[source].name.decode() if isinstance(tensors[source].name, bytes) else str(tensors[source].name)
            weights[buf] = (dtype in _INT8_TYPES, tname)
    float_names = tuple(sorted(n for is_int8, n in weights.values() if not is_int8))
    int8 = sum(1 for is_int8, _ in weights.values() if is_int8)
    return MatMulReport(len(weights), int8, float_names, activation_total, 0, ops)
