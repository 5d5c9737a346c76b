"""export_tflite: litert-torch conversion, bucket signatures, parity, interpreter problems in plain words."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

try:  # not importorskip: jaxlib, under litert-torch, raises RuntimeError at import on a CPU without AVX (qemu's Nehalem)
    import ai_edge_litert.interpreter  # noqa: F401
    import litert_torch  # noqa: F401
except Exception as err:  # noqa: BLE001
    pytest.skip(f"litert-torch unavailable: {type(err).__name__}: {err}", allow_module_level=True)

import edge_runtime.models as er  # noqa: E402
from tests.conftest import TINY_YAML, run_yaml, write_yaml  # noqa: E402

BUCKETS = (32, 64)
INT8_KERNEL_TOL = 0.02  # max |logit diff| any int8 kernel path may add (see _int8_kernels_within)
EXPORT_YAML = TINY_YAML + """\
      - export_tflite: {id: tfl, buckets: [32, 64], parity_rows: 24}
"""


@pytest.fixture(scope="module")
def tflite_art(tiny_teacher, tiny_cache, tmp_path_factory):
    """The tiny teacher exported through the real runner: fp32, fp16, int8-dynamic files."""
    y = write_yaml(tmp_path_factory.mktemp("tfl") / "pipelines.yaml", EXPORT_YAML)
    result = run_yaml(y, "tiny", tiny_cache)
    assert result.exit_code == 0, result.error
    return result.steps[-1].artifact


@pytest.fixture(scope="module")
def tiny_model(tiny_teacher):
    from albert_edge.models import load_model

    model, tok, _ = load_model(tiny_teacher.model_dir)
    return model.eval(), tok


def _eval_rows(tok, rows=16, max_len=64):
    from albert_edge.data import TaskConfig, encode, read_examples

    task = TaskConfig(max_eval_rows=rows, max_seq_len=max_len)
    return encode(tok, read_examples(task, "eval"), max_len)


# --- the bucket rule (pure numpy, no model) ---------------------------------------------------


def test_pick_bucket_is_the_smallest_bucket_that_holds_the_real_length():
    assert er.pick_bucket(1, [64, 32, 128]) == 32
    assert er.pick_bucket(32, [32, 64, 128]) == 32
    assert er.pick_bucket(33, [32, 64, 128]) == 64
    assert er.pick_bucket(128, [32, 64, 128]) == 128
    assert er.pick_bucket(300, [32, 64, 128]) == 128  # longer rows are truncated to the largest
    mask = np.zeros((2, 100), dtype=np.int64)
    mask[0, :10], mask[1, :40] = 1, 1
    assert er.real_length(mask) == 40
    assert er.real_length(np.zeros((1, 8), dtype=np.int64)) == 1


def test_bucketed_edge_model_pads_to_the_chosen_bucket():
    seen = []

    def run(feeds):
        seen.append((feeds["input_ids"].shape[-1], int(feeds["attention_mask"].sum())))
        return np.zeros((feeds["input_ids"].shape[0], 2), np.float32)

    m = er.EdgeModel("x.tflite", "litert", None, 1, run, buckets=(32, 64, 128))
    for real, padded_to in ((5, 100), (40, 48), (70, 256), (200, 200)):
        ids = np.ones((1, padded_to), np.int64)
        mask = np.zeros_like(ids)
        mask[0, :real] = 1
        m(ids, mask)
    # (bucket run, tokens kept): rows beyond the largest bucket are truncated to it
    assert seen == [(32, 5), (64, 40), (128, 70), (128, 128)]


# --- conversion and layout -----------------------------------------------------------------


def test_one_file_per_precision_with_one_signature_per_bucket(tflite_art):
    variants = {v["precision"]: v for v in tflite_art.variants()}
    assert set(variants) == {"fp32", "fp16", "int8-dynamic"}
    for v in variants.values():
        path = tflite_art.path / v["file"]
        assert path.is_file() and v["size_bytes"] == path.stat().st_size
        assert v["format"] == "tflite" and "seq_len" not in v and v["buckets"] == list(BUCKETS)
        assert v["signatures"] == {"32": "seq_32", "64": "seq_64"} and v["input_dtype"] == "int32"
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        assert set(interp.get_signature_list()) == {"seq_32", "seq_64"}
        for seq in BUCKETS:
            ins = interp.get_signature_runner(f"seq_{seq}").get_input_details()
            assert set(ins) == {"input_ids", "attention_mask", "token_type_ids"}
            assert all(d["dtype"] == np.int32 and list(d["shape"]) == [1, seq] for d in ins.values())
    # reduced precisions really are smaller (weights at 16 / 8 bits)
    assert variants["fp16"]["size_bytes"] < 0.6 * variants["fp32"]["size_bytes"]
    assert variants["int8-dynamic"]["size_bytes"] < variants["fp16"]["size_bytes"]


def test_bucket_signatures_share_one_weight_set(tflite_art, tiny_model, tmp_path):
    """Why one file with signatures: a 2-bucket file is barely larger than a 1-bucket file."""
    from export.tflite import convert_tflite

    model, _ = tiny_model
    single = convert_tflite(model, tmp_path / "one.tflite", seq_lens=(32,), precision="fp32")
    both = next(v for v in tflite_art.variants() if v["precision"] == "fp32")
    assert both["size_bytes"] < 1.1 * single["size_bytes"], (both["size_bytes"], single["size_bytes"])


@pytest.mark.kernels
def test_exported_files_match_torch_independently(tflite_art, tiny_model, tmp_path):
    """Re-check the stage's claims with our own loop: each row padded to its bucket, run, compared.

    int8 claims are made on the file's own arithmetic without int8 kernels (its int8 weights
    dequantised and run by float kernels, see _int8_weights_in_float), which every CPU
    computes alike; the CPU's dynamic-range kernels (activations rounded per row at run time,
    differently on AVX2, AVX-512 VNNI, ARM dot-product paths) only have to stay input-aware."""
    import torch

    model, tok = tiny_model
    enc = _eval_rows(tok)
    paths = {v["precision"]: tflite_art.path / v["file"] for v in tflite_art.variants()}
    emulated, steps, changed = _int8_weights_in_float(paths["int8-dynamic"], paths["fp32"], tmp_path / "int8-in-float.tflite")
    assert steps <= 0.5 * (1 + 1e-5) and changed >= 1  # every int8 weight is its fp32 weight rounded to its own step
    paths["int8-in-float"] = emulated
    files = {p: er.open_model(str(path), runtime="litert", threads=1) for p, path in paths.items()}
    ref_preds, refs, worst = [], [], {p: 0.0 for p in files}
    preds: dict[str, list[int]] = {}
    agree = {p: 0 for p in files}
    for ids, tt in zip(enc.input_ids, enc.token_type_ids):
        width = er.pick_bucket(len(ids), BUCKETS)
        x = np.zeros((1, width), np.int64)
        x[0, : len(ids)] = ids
        m = np.zeros_like(x)
        m[0, : len(ids)] = 1
        t = np.zeros_like(x)
        t[0, : len(tt)] = tt
        with torch.no_grad():
            ref = model(
                input_ids=torch.from_numpy(x), attention_mask=torch.from_numpy(m), token_type_ids=torch.from_numpy(t)
            ).logits.numpy()
        ref_preds.append(int(ref.argmax()))
        refs.append(ref[0])
        for p, f in files.items():
            out = f(x, m, t)
            worst[p] = max(worst[p], float(np.abs(out - ref).max()))
            agree[p] += int(out.argmax() == ref.argmax())
            preds.setdefault(p, []).append(int(out.argmax()))
    n = len(enc)
    assert worst["fp32"] <= 1e-4 and agree["fp32"] == n
    assert agree["fp16"] / n >= 0.99
    # the int8 file's arithmetic (float kernels only): close to torch, same answers, really quantised
    assert agree["int8-in-float"] / n >= 0.99 and worst["int8-in-float"] < 0.05
    assert worst["int8-in-float"] > 10 * worst["fp32"]  # not a copy of the fp32 file
    assert worst["int8-in-float"] <= INT8_KERNEL_TOL
    _int8_kernels_within(np.stack(refs), np.asarray(preds["int8-dynamic"]), worst["int8-dynamic"])
    m = tflite_art.metrics
    by_precision = {v["precision"]: v for v in tflite_art.variants()}
    assert m["buckets"] == list(BUCKETS) and m["parity_rows"] == 24 and by_precision["fp32"]["max_abs_diff"] <= 1e-4
    assert m["max_abs_diff"] == max(v["max_abs_diff"] for v in by_precision.values())


def _int8_kernels_within(ref: np.ndarray, preds: np.ndarray, kernel_err: float, tol: float = INT8_KERNEL_TOL) -> None:
    """What this CPU's dynamic-range int8 kernels must keep. They add the rounding of activations
    to 8 bits per row at run time, which differs by kernel path (x86 AVX2 / AVX-512 / VNNI, ARM
    dot product) in the last steps only; `tol` bounds every path with a wide factor (about 25x the
    largest error measured on the tiny teacher, 8e-4), not by one CPU's margin. Rows whose fp32
    margin (top logit minus runner-up) exceeds twice the bound cannot change their answer:
    those must be nearly all rows (a fact of the model, the same on every CPU) and all agree."""
    assert np.isfinite(kernel_err) and kernel_err <= tol, (kernel_err, tol)
    top2 = np.sort(ref, axis=-1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) > 2 * tol
    assert sure.mean() >= 0.99, (np.round(top2[:, 1] - top2[:, 0], 5), tol)
    assert (preds[sure] == ref.argmax(-1)[sure]).all()


def test_fp32_file_avoids_ops_tflite_runtime_2_14_lacks(tflite_art):
    """transformers' 2-D mask expansion lowers to a bool GATHER_ND v5 that tflite-runtime 2.14
    cannot run; the export wrapper builds the 4-D mask itself so the file stays runnable there."""
    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    v = next(v for v in tflite_art.variants() if v["precision"] == "fp32")
    model = s.ModelT.InitFromPackedBuf(bytearray((tflite_art.path / v["file"]).read_bytes()), 0)
    names = {val: key for key, val in vars(s.BuiltinOperator).items() if not key.startswith("_")}
    ops = {names[max(c.builtinCode, c.deprecatedBuiltinCode)]: c.version for c in model.operatorCodes}
    assert "GATHER_ND" not in ops and "FULLY_CONNECTED" in ops


def test_parity_miss_fails_the_stage_with_a_table(tiny_teacher, tiny_cache, tmp_path, monkeypatch):
    """A file whose answers differ from torch must fail the stage, listing the rows that differ."""
    import export.parity as parity

    real = parity.file_logits

    def flipped(*args, **kwargs):
        out = real(*args, **kwargs)
        out[0] = out[0][::-1] + np.array([1.0, -1.0], np.float32)  # a wrong answer on row 0
        return out

    monkeypatch.setattr(parity, "file_logits", flipped)
    y = write_yaml(
        tmp_path / "pipelines.yaml", TINY_YAML + "      - export_tflite: {id: tfl_bad, buckets: [32], precisions: [fp32], parity_rows: 8}\n"
    )
    result = run_yaml(y, "tiny", tiny_cache)
    assert result.exit_code == 1
    assert "parity check failed for tflite-fp32" in result.error
    assert "max|diff|" in result.error and "reference logits -> file logits" in result.error


def test_convert_tflite_rejects_bad_requests(tiny_model, tmp_path):
    from export.tflite import TFLiteExportError, convert_tflite

    model, _ = tiny_model
    with pytest.raises(TFLiteExportError, match="precision"):
        convert_tflite(model, tmp_path / "x.tflite", seq_lens=(32,), precision="int4")
    with pytest.raises(TFLiteExportError, match="buckets"):
        convert_tflite(model, tmp_path / "x.tflite", seq_lens=(0,), precision="fp32")


def _int8_scale_counts(path):
    """Number of scales of every int8 weight tensor in the file's first signature."""
    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    m = s.ModelT.InitFromPackedBuf(bytearray(path.read_bytes()), 0)
    return [len(t.quantization.scale) for t in m.subgraphs[0].tensors
            if t.type == s.TensorType.INT8 and t.quantization is not None and t.quantization.scale is not None]


@pytest.mark.kernels
def test_int8_dynamic_granularity(tflite_art, tiny_model, tmp_path):
    """channel (default): one scale per output row; tensor: one per weight, still within parity
    (judged on the file's own arithmetic, see test_exported_files_match_torch_independently)."""
    from export.parity import file_logits
    from export.tflite import convert_tflite

    model, tok = tiny_model
    channel = tflite_art.path / "model.int8-dynamic.tflite"
    assert max(_int8_scale_counts(channel)) > 1
    out = tmp_path / "tensor.tflite"
    v = convert_tflite(model, out, seq_lens=BUCKETS, precision="int8-dynamic", float_file=tflite_art.path / "model.fp32.tflite",
                       granularity="tensor")
    assert v["weight_granularity"] == "tensor" and "tflite-runtime" in v["interpreters"]
    assert set(_int8_scale_counts(out)) == {1}
    emulated, steps, _ = _int8_weights_in_float(out, tflite_art.path / "model.fp32.tflite", tmp_path / "tensor-in-float.tflite")
    assert steps <= 0.5 * (1 + 1e-5)  # one step per tensor, every weight still within half of it
    enc = _eval_rows(tok, rows=40)
    fp32 = file_logits(tflite_art.path / "model.fp32.tflite", enc, buckets=BUCKETS)
    own = file_logits(emulated, enc, buckets=BUCKETS)
    assert (fp32.argmax(-1) == own.argmax(-1)).mean() >= 0.95 and 0 < np.abs(fp32 - own).max() < 0.05
    got = file_logits(out, enc, buckets=BUCKETS)  # this CPU's kernels
    _int8_kernels_within(fp32, got.argmax(-1), float(np.abs(fp32 - got).max()))


def _int8_weights_in_float(int8_file, fp32_file, out):
    """The int8 file's own weights run without any int8 kernel: every int8 constant a matmul or
    embedding lookup reads, dequantised ((q - zero point) * scale, per channel where the file
    has channel scales) into the fp32 file at the same operator's input, then run by float
    kernels: CPU-independent up to float rounding. Returns (path, worst |dequantised - fp32|
    weight error in units of its own step, number of weights that changed)."""
    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    flatbuffers = pytest.importorskip("flatbuffers")
    from export.tflite_compact import compact_tflite

    q8 = s.ModelT.InitFromPackedBuf(bytearray(int8_file.read_bytes()), 0)
    f32 = s.ModelT.InitFromPackedBuf(bytearray(fp32_file.read_bytes()), 0)
    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    worst_steps, changed, done = 0.0, 0, set()
    for sq, sf in zip(q8.subgraphs, f32.subgraphs):
        assert len(sq.operators) == len(sf.operators)  # dynamic-range int8 keeps the operator list
        for oq, of in zip(sq.operators, sf.operators):
            op = names[max(q8.operatorCodes[oq.opcodeIndex].builtinCode, q8.operatorCodes[oq.opcodeIndex].deprecatedBuiltinCode)]
            assert op == names[max(f32.operatorCodes[of.opcodeIndex].builtinCode, f32.operatorCodes[of.opcodeIndex].deprecatedBuiltinCode)]
            for iq, i_f in zip(oq.inputs, of.inputs):
                tq, tf = sq.tensors[iq], sf.tensors[i_f]
                if tq.type != s.TensorType.INT8 or not tq.buffer or q8.buffers[tq.buffer].data is None or tf.buffer in done:
                    continue
                q = np.asarray(q8.buffers[tq.buffer].data, np.uint8).view(np.int8).reshape(tq.shape).astype(np.float64)
                w = np.asarray(f32.buffers[tf.buffer].data, np.uint8).view(np.float32).reshape(tf.shape).astype(np.float64)
                scale = np.asarray(tq.quantization.scale, np.float64)
                zero = np.asarray(tq.quantization.zeroPoint if tq.quantization.zeroPoint is not None else [0], np.float64)
                shape = [1] * q.ndim
                if scale.size > 1:
                    shape[tq.quantization.quantizedDimension] = scale.size
                deq = (q - zero.reshape(shape if zero.size > 1 else [1] * q.ndim)) * scale.reshape(shape)
                worst_steps = max(worst_steps, float((np.abs(deq - w) / scale.reshape(shape)).max()))
                changed += int(not np.array_equal(deq.astype(np.float32), w.astype(np.float32)))
                f32.buffers[tf.buffer].data = np.frombuffer(deq.astype(np.float32).tobytes(), np.uint8)
                done.add(tf.buffer)
    b = flatbuffers.Builder(1 << 20)
    b.Finish(f32.Pack(b), file_identifier=b"TFL3")
    out.write_bytes(b.Output())
    compact_tflite(out)  # restores the 16-byte weight alignment
    return out, worst_steps, changed


def test_calibration_feeds_pad_each_row_to_its_bucket():
    from albert_edge.data import Encoded
    from export.tflite import calibration_feeds

    enc = Encoded([[2, 5, 3], [2] + [9] * 40 + [3]], [[0] * 3, [0] * 42], [0, 1])
    feeds = calibration_feeds(enc, (32, 64, 128))
    assert [f["input_ids"].shape for f in feeds["seq_32"]] == [(1, 32)]
    assert [int(f["attention_mask"].sum()) for f in feeds["seq_64"]] == [42]
    assert len(feeds["seq_128"]) == 2  # no row needs 128: calibrate it on every row
    assert all(f["input_ids"].dtype == np.int32 for rows in feeds.values() for f in rows)


def test_int8_static_needs_calibration_rows(tflite_art, tiny_model, tmp_path):
    from export.tflite import TFLiteExportError, convert_tflite

    model, _ = tiny_model
    fp32 = tflite_art.path / "model.fp32.tflite"
    with pytest.raises(TFLiteExportError, match="calibration"):
        convert_tflite(model, tmp_path / "s.tflite", seq_lens=BUCKETS, precision="int8-static", float_file=fp32)


@pytest.mark.slow
@pytest.mark.kernels
def test_int8_static_quantises_activations(tflite_art, tiny_model, tmp_path):
    """int8 weights AND activations (calibrated on train rows): most tensors become int8."""
    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    from albert_edge.data import TaskConfig, encode, read_examples
    from export.parity import file_logits
    from export.tflite import convert_tflite

    model, tok = tiny_model
    cal = encode(tok, read_examples(TaskConfig(max_train_rows=32, max_seq_len=64), "train"), 64)
    out = tmp_path / "static.tflite"
    convert_tflite(model, out, seq_lens=BUCKETS, precision="int8-static", float_file=tflite_art.path / "model.fp32.tflite", calibration=cal)
    m = s.ModelT.InitFromPackedBuf(bytearray(out.read_bytes()), 0)
    kinds = [t.type for t in m.subgraphs[0].tensors]
    assert kinds.count(s.TensorType.INT8) > kinds.count(s.TensorType.FLOAT32) * 5
    enc = _eval_rows(tok, rows=40)
    fp32 = file_logits(tflite_art.path / "model.fp32.tflite", enc, buckets=BUCKETS)
    static = file_logits(out, enc, buckets=BUCKETS)
    # int8 activations run on this CPU's int8 kernels, whose rounding differs by ISA; the bound the
    # static ranges allow is far above any kernel's rounding differences (1e-3 measured), and rows
    # whose fp32 margin exceeds twice it cannot change their answer
    tol = 0.05
    assert np.isfinite(static).all() and np.abs(fp32 - static).max() < tol
    top2 = np.sort(fp32, axis=-1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) > 2 * tol
    assert (static.argmax(-1)[sure] == fp32.argmax(-1)[sure]).all()


def test_config_validation_names_the_field():
    from albert_edge.schema import ConfigError, build
    from albert_edge.stages.export_tflite import ExportTFLiteConfig

    with pytest.raises(ConfigError, match="buckets"):
        build(ExportTFLiteConfig, {"buckets": [32, 32]}, "export_tflite")
    with pytest.raises(ConfigError, match="buckets"):
        build(ExportTFLiteConfig, {"buckets": [1024]}, "export_tflite")
    with pytest.raises(ConfigError, match="precisions"):
        build(ExportTFLiteConfig, {"precisions": ["int4"]}, "export_tflite")
    assert build(ExportTFLiteConfig, {}, "export_tflite").buckets == (32, 64, 128)


# --- interpreters: preference order and plain-words problems -----------------------------


def _fake_tflite_runtime(monkeypatch, version="2.14.0", error=None):
    """Install a stand-in `tflite_runtime` package whose Interpreter raises `error`."""
    pkg = types.ModuleType("tflite_runtime")
    pkg.__version__ = version
    mod = types.ModuleType("tflite_runtime.interpreter")

    class Interpreter:
        def __init__(self, model_path, num_threads=1):
            if error:
                raise error

    mod.Interpreter = Interpreter
    pkg.interpreter = mod
    monkeypatch.setitem(sys.modules, "tflite_runtime", pkg)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", mod)


def test_tflite_runtime_beside_numpy_2_is_refused_in_plain_words(monkeypatch):
    assert er.tflite_runtime_numpy_problem("2.14.0", "1.26.4") == ""
    why = er.tflite_runtime_numpy_problem("2.14.0", "2.1.0")
    assert "numpy 1.x" in why and "numpy<2" in why and "ai-edge-litert" in why
    _fake_tflite_runtime(monkeypatch)
    monkeypatch.setattr(er.np, "__version__", "2.4.6")
    assert "numpy<2" in er.runtime_available("tflite-runtime")
    monkeypatch.setattr(er.np, "__version__", "1.26.4")
    assert er.runtime_available("tflite-runtime") == ""


def test_tflite_runtime_import_failure_messages(monkeypatch):
    real_import = er.importlib.import_module

    def failing(name, *a):
        if name.startswith("tflite_runtime"):
            raise ImportError("numpy.core.multiarray failed to import")
        return real_import(name, *a)

    monkeypatch.setattr(er.importlib, "import_module", failing)
    assert "numpy < 2" in er.runtime_available("tflite-runtime")


def test_op_version_mismatch_is_named_and_the_next_interpreter_is_tried(tflite_art, monkeypatch):
    path = str(tflite_art.path / next(v["file"] for v in tflite_art.variants() if v["precision"] == "fp32"))
    msg = "Didn't find op for builtin opcode 'GATHER_ND' version '5'. An older version of this builtin might be supported."
    _fake_tflite_runtime(monkeypatch, error=ValueError(msg))
    monkeypatch.setattr(er.np, "__version__", "1.26.4")  # so only the op version is in the way
    with pytest.raises(er.ModelLoadError, match="op GATHER_ND version 5 is newer than this interpreter") as err:
        er.open_model(path, runtime="tflite-runtime")
    assert "ai-edge-litert" in str(err.value)
    # preference order: litert first; if it cannot open the file, tflite-runtime, then tf.lite
    monkeypatch.setattr(er, "TFLITE_RUNTIMES", ("tflite-runtime", "litert"))
    m = er.open_model(path)
    assert m.runtime == "litert" and m.buckets == BUCKETS


def test_real_op_version_mismatch_from_litert(tmp_path):
    """A real interpreter refusing a real file: an ADD op claiming a version no runtime has."""
    s = pytest.importorskip("ai_edge_litert.schema_py_generated")
    flatbuffers = pytest.importorskip("flatbuffers")
    from tests.test_parity import _tflite

    good = _tflite(tmp_path / "add.tflite")
    m = s.ModelT.InitFromPackedBuf(bytearray(good.read_bytes()), 0)
    m.operatorCodes[0].version = 99
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    bad = tmp_path / "future.tflite"
    bad.write_bytes(b.Output())
    with pytest.raises(er.ModelLoadError, match="op ADD version 99 is newer than this interpreter"):
        er.open_model(str(bad), runtime="litert")


def test_no_interpreter_at_all_says_what_to_install(tmp_path, monkeypatch):
    f = tmp_path / "m.tflite"
    f.write_bytes(b"\0" * 64)
    monkeypatch.setattr(er, "runtime_available", lambda r: f"{r} is not installed")
    with pytest.raises(er.ModelLoadError, match="pip install ai-edge-litert"):
        er.open_model(str(f))


def test_real_tflite_runtime_if_installed(tflite_art):
    """Runs only where tflite-runtime works (numpy < 2): the fp32 file runs there too."""
    if er.runtime_available("tflite-runtime"):
        pytest.skip(er.runtime_available("tflite-runtime"))
    v = next(v for v in tflite_art.variants() if v["precision"] == "fp32")
    m = er.open_model(str(tflite_art.path / v["file"]), runtime="tflite-runtime")
    ids = np.full((1, 20), 7, np.int64)
    assert m(ids, np.ones_like(ids)).shape == (1, 2)


# --- compaction: one table per weight across bucket signatures ------------------------------


def _signature_logits(path, buckets, seed=0):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    rng = np.random.default_rng(seed)
    out = {}
    for seq in buckets:
        feed = {"input_ids": rng.integers(1, 1000, (1, seq)).astype(np.int32),
                "attention_mask": np.ones((1, seq), np.int32), "token_type_ids": np.zeros((1, seq), np.int32)}
        feed["attention_mask"][0, seq // 2:] = 0
        out[seq] = interp.get_signature_runner(f"seq_{seq}")(**feed)["logits"]
    return out, interp


def test_compaction_shrinks_bucketed_files_and_keeps_logits_bit_identical(tiny_model, tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    from export.tflite import _convert_fp32, quantize_tflite
    from export.tflite_compact import compact_tflite

    model, _ = tiny_model
    buckets = (16, 32, 64)
    raw = tmp_path / "raw.fp32.tflite"
    _convert_fp32(model, raw, buckets)  # litert-torch's own output, not compacted
    raw_int8 = tmp_path / "raw.int8.tflite"
    quantize_tflite(raw, raw_int8, "int8-dynamic")
    for src in (raw, raw_int8):
        dst = tmp_path / f"compact.{src.name}"
        stats = compact_tflite(src, dst)
        assert stats.bytes_before == src.stat().st_size and stats.bytes_after == dst.stat().st_size
        assert stats.bytes_after < stats.bytes_before
        # every weight's table is written once, not once per signature
        assert stats.tensor_tables_written < stats.tensors
        before, _ = _signature_logits(src, buckets)
        after, interp = _signature_logits(dst, buckets)
        for seq in buckets:
            np.testing.assert_array_equal(after[seq], before[seq])
        # apps see the same signatures, input names and shapes
        assert set(interp.get_signature_list()) == {f"seq_{s}" for s in buckets}
        ins = interp.get_signature_runner("seq_16").get_input_details()
        assert set(ins) == {"input_ids", "attention_mask", "token_type_ids"} and list(ins["input_ids"]["shape"]) == [1, 16]
        m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(dst.read_bytes(), 0))
        sg = m.subgraphs[0]
        assert [sg.tensors[i].name for i in sg.inputs] == [s.tensors[i].name for s in [schema.ModelT.InitFromObj(
            schema.Model.GetRootAsModel(src.read_bytes(), 0)).subgraphs[0]] for i in sg.inputs]
        assert all(len(t.name) <= 8 for i, t in enumerate(sg.tensors) if i not in set(sg.inputs) | set(sg.outputs))
        # weight data keeps the converter's 16-byte alignment
        raw_bytes = dst.read_bytes()
        for b in m.buffers:
            if b.data is not None and len(b.data) > 64:
                assert raw_bytes.find(np.asarray(b.data, np.uint8).tobytes()) % 16 == 0
        # compacting a compacted file changes nothing that matters
        again = compact_tflite(dst, tmp_path / "again.tflite")
        assert abs(again.bytes_after - again.bytes_before) <= 64


def test_exported_files_are_compacted(tflite_art):
    for v in tflite_art.variants():
        assert v["compaction"]["bytes_after"] == v["size_bytes"] < v["compaction"]["bytes_before"]


def test_compaction_refuses_a_file_that_is_not_tflite(tmp_path):
    from export.tflite_compact import compact_tflite

    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"PK\x03\x04 not a flatbuffer at all")
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        compact_tflite(bad)
    assert bad.read_bytes().startswith(b"PK")  # left as it was


def test_matmul_audit_counts_int8_weights_in_every_precision(tflite_art):
    """The TFLite twin of the ONNX MatMul audit: fp32/fp16 files have no int8 weight matmul,
    the int8-dynamic file has every one int8, and shared bucket weights count once."""
    from export.tflite_audit import matmul_report

    files = {v["precision"]: tflite_art.path / v["file"] for v in tflite_art.variants()}
    fp32, int8 = matmul_report(files["fp32"]), matmul_report(files["int8-dynamic"])
    assert fp32.weight_total > 0 and fp32.weight_int8 == 0 and len(fp32.float_weight_nodes) == fp32.weight_total
    assert int8.weight_total == fp32.weight_total  # the same weights, counted once across the buckets
    assert int8.weight_int8 == int8.weight_total and not int8.float_weight_nodes
    assert matmul_report(files["fp16"]).weight_int8 == 0


def test_audit_names_are_stable_across_precisions(tflite_art):
    """The audit names a weight matmul by its place in the graph (`<OP>#<k>`), not by the
    compacted tensor name (`w<buffer>`, which quantising renumbers): the fp32 and int8 files
    list the same names, which is what lets the keep-float fallback's list be checked."""
    from export.tflite_audit import weight_matmuls

    files = {v["precision"]: tflite_art.path / v["file"] for v in tflite_art.variants()}
    fp32, _, _ = weight_matmuls(files["fp32"])
    int8, _, _ = weight_matmuls(files["int8-dynamic"])
    assert [w.name for w in fp32] == [w.name for w in int8] == [f"{w.op}#{k}" for k, w in enumerate(fp32)]
    assert [w.shape for w in fp32] == [w.shape for w in int8]
    assert [w.buffer for w in fp32] != [w.buffer for w in int8]  # why tensor names (w<buffer>) could not serve
    # one weight, read by one operator per bucket signature: every reader is listed
    assert all(len(w.scopes) % len(BUCKETS) == 0 for w in fp32)


def test_keep_float_and_only_scopes_reach_exactly_the_named_weights(tflite_art, tmp_path):
    """The recipe rules the fallback adds match operators by output tensor name in the
    uniquely renamed copy (`s<subgraph>t<index>`, signature outputs keep theirs): keeping two
    weights float leaves exactly those two float, in every signature; `only` quantises one."""
    from compress.tflite_int8 import Quantiser, candidates
    from export.tflite_audit import matmul_report, unexpected_float

    fp32 = tflite_art.path / "model.fp32.tflite"
    weights = candidates(fp32, tmp_path)
    assert len(weights) == matmul_report(fp32).weight_total
    assert any(s.startswith("s1t") for w in weights for s in w.scopes)  # names unique across signatures
    classifier = weights[-1]
    assert set(classifier.scopes) == {f"seq_{b}_logits_output" for b in BUCKETS}  # the signature outputs
    q = Quantiser(fp32, "int8-dynamic")
    keep = [classifier, weights[0]]
    q.build(tmp_path / "keep.tflite", keep_float=keep)
    rep = matmul_report(tmp_path / "keep.tflite")
    assert set(rep.float_weight_nodes) == {w.name for w in keep} and rep.weight_int8 == rep.weight_total - 2
    assert unexpected_float(tmp_path / "keep.tflite", {w.name for w in keep}) == []
    assert unexpected_float(tmp_path / "keep.tflite", {classifier.name}) == [weights[0].name]  # any other float one is named
    q.build(tmp_path / "only.tflite", only=[weights[3]])
    rep = matmul_report(tmp_path / "only.tflite")
    assert rep.weight_int8 == 1 and weights[3].name not in rep.float_weight_nodes
