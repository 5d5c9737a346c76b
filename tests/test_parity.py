"""The shared parity checker and edge_runtime's load errors (no training needed)."""

from __future__ import annotations

import numpy as np
import pytest

from albert_edge.contract import StageError
from albert_edge.data import Encoded
from albert_edge.stages.common import require_parity
from edge_runtime import ModelLoadError, open_model, pick_bucket
from export.parity import check, clip_encoded, file_logits


def _logits(n=40, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2)).astype(np.float32)


def test_fp32_passes_within_atol_and_fails_beyond():
    ref = _logits()
    y = ref.argmax(-1)
    ok = check("f", ref, ref + 5e-5, y, precision="fp32", atol=1e-4)
    assert ok.ok and ok.max_abs_diff == pytest.approx(5e-5, rel=1e-2) and ok.agreement == 1.0
    bad = check("f", ref, ref + 2e-4, y, precision="fp32", atol=1e-4)
    assert not bad.ok and "atol" in bad.problems[0]
    assert bad.table.count("\n") >= 1  # header + differing rows


def test_fp32_flip_is_reported_even_within_atol():
    ref = np.array([[0.0, 1e-6], [1.0, 0.0]], dtype=np.float32)
    got = np.array([[1e-6, 0.0], [1.0, 0.0]], dtype=np.float32)
    res = check("f", ref, got, [1, 0], precision="fp32", atol=1e-4)
    assert not res.ok and any("argmax" in p for p in res.problems)
    assert res.table.splitlines()[1].split()[0] == "0"  # row 0 is the one that differs


def test_int8_agreement():
    """Parity judges argmax agreement with the fp32 logits; accuracy against the teacher is the
    budget's verdict (tests/test_budget.py), not parity's."""
    ref = _logits(200)
    y = ref.argmax(-1)
    noisy = ref + np.random.default_rng(1).normal(scale=1e-3, size=ref.shape).astype(np.float32)
    res = check("q", ref, noisy, y, precision="int8-dynamic")
    assert res.agreement >= 0.99 and res.ok
    flipped = ref.copy()
    flipped[:10] = flipped[:10, ::-1]  # 5 % of rows flip
    res = check("q", ref, flipped, y, precision="int8-dynamic")
    assert not res.ok and any("agreement" in p for p in res.problems)
    assert check("q", ref, flipped, y, precision="int8-dynamic", min_agreement=0.9).ok  # a lower bar lets it through


def test_shape_mismatch_and_nan_fail():
    ref = _logits(4)
    assert not check("x", ref, ref[:3], [0, 1, 0, 1], precision="fp32").ok
    nan = ref.copy()
    nan[0, 0] = np.nan
    assert not check("x", ref, nan, [0, 1, 0, 1], precision="fp16").ok


def test_require_parity_raises_with_table():
    ref = _logits(10)
    good = check("good", ref, ref, ref.argmax(-1), precision="fp32")
    bad = check("bad", ref, -ref, ref.argmax(-1), precision="fp32")
    require_parity([good])
    with pytest.raises(StageError) as err:
        require_parity([good, bad])
    text = str(err.value)
    assert "bad" in text and "good" not in text.splitlines()[0].split("for ")[1]
    assert "reference logits -> file logits" in text


def test_pick_bucket():
    assert pick_bucket(1, [32, 64, 128]) == 32
    assert pick_bucket(32, [128, 32, 64]) == 32
    assert pick_bucket(33, [32, 64, 128]) == 64
    assert pick_bucket(500, [32, 64, 128]) == 128  # longest bucket; the input is truncated
    with pytest.raises(ValueError):
        pick_bucket(3, [])


def _sum_model(path, fixed_seq=None):
    """An ONNX 'classifier' whose logits are masked sums of ids: easy to predict exactly."""
    import onnx
    from onnx import TensorProto, helper

    seq = fixed_seq or "s"
    ins = [helper.make_tensor_value_info(n, TensorProto.INT64, ["b", seq]) for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])
    nodes = [
        helper.make_node("Mul", ["input_ids", "attention_mask"], ["m"]),
        helper.make_node("Cast", ["m"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["f", "axes"], ["s"], keepdims=1),
        helper.make_node("Cast", ["attention_mask"], ["mf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mf", "axes"], ["n"], keepdims=1),
        helper.make_node("Concat", ["s", "n"], ["logits"], axis=1),
    ]
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    g = helper.make_graph(nodes, "sum", ins, [out], initializer=[axes])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_file_logits_dynamic_fixed_and_buckets(tmp_path):
    enc = Encoded([[2, 5, 7, 3], [2, 9, 3], list(range(2, 12))], [[0] * 4, [0] * 3, [0] * 10], [0, 1, 0])
    expect = np.array([[17, 4], [14, 3], [65, 10]], dtype=np.float32)
    dyn = _sum_model(tmp_path / "dyn.onnx")
    np.testing.assert_allclose(file_logits(dyn, enc, batch_size=2), expect)
    np.testing.assert_allclose(file_logits(dyn, enc, buckets=[4, 16]), expect)
    # a fixed-shape file of 8 tokens truncates the 10-token row, exactly like clip_encoded
    fixed = _sum_model(tmp_path / "fixed.onnx", fixed_seq=8)
    clipped = np.array([[sum(r), len(r)] for r in clip_encoded(enc, 8).input_ids], dtype=np.float32)
    np.testing.assert_allclose(file_logits(fixed, enc), clipped)
    assert clipped[2, 1] == 8


def test_corrupt_and_truncated_onnx_give_clear_errors(tmp_path):
    good = _sum_model(tmp_path / "good.onnx")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(data[: len(data) // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x07not an onnx file" * 20)
    for p in (trunc, garbage):
        with pytest.raises(ModelLoadError, match="corrupt or truncated"):
            open_model(str(p))
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="empty or truncated"):
        open_model(str(empty))
    with pytest.raises(ModelLoadError, match="not found"):
        open_model(str(tmp_path / "missing.onnx"))


def test_unsupported_onnx_op_gives_clear_error(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])
    node = helper.make_node("NotARealOp", ["input_ids"], ["logits"], domain="com.example.custom")
    m = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example.custom", 1)])
    p = tmp_path / "custom.onnx"
    onnx.save(m, str(p))
    with pytest.raises(ModelLoadError, match="does not support an op") as err:
        open_model(str(p))
    assert "NotARealOp" in str(err.value)


def _tflite(path, custom_op=None):
    """A minimal .tflite (y = x + x) written with the flatbuffer schema; optionally a custom op."""
    flatbuffers = pytest.importorskip("flatbuffers")
    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    m = s.ModelT()
    m.version = 3
    m.buffers = [s.BufferT()]
    code = s.OperatorCodeT()
    op_id = s.BuiltinOperator.CUSTOM if custom_op else s.BuiltinOperator.ADD
    code.builtinCode = code.deprecatedBuiltinCode = op_id
    code.customCode = custom_op
    code.version = 1
    m.operatorCodes = [code]
    sg = s.SubGraphT()
    sg.tensors = []
    for name in ("x", "y"):
        t = s.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [1, 4], s.TensorType.FLOAT32, 0
        sg.tensors.append(t)
    sg.inputs, sg.outputs = [0], [1]
    op = s.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 0], [1]
    if not custom_op:
        op.builtinOptionsType, op.builtinOptions = s.BuiltinOptions.AddOptions, s.AddOptionsT()
    sg.operators = [op]
    m.subgraphs = [sg]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(b.Output())
    return path


def test_tflite_truncated_and_unsupported_op_give_clear_errors(tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter")
    good = _tflite(tmp_path / "good.tflite")
    interp_ok = open_model(str(good), runtime="litert")  # the builder itself makes valid files
    assert interp_ok.fixed_seq_len == 4
    data = good.read_bytes()
    trunc = tmp_path / "trunc.tflite"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        open_model(str(trunc), runtime="litert")
    custom = _tflite(tmp_path / "custom.tflite", custom_op="NotARealOp")
    with pytest.raises(ModelLoadError, match="does not support an op") as err:
        open_model(str(custom), runtime="litert")
    assert "NotARealOp" in str(err.value)
