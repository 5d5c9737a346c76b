"""quantize: every encoder MatMul int8 (shared ALBERT weights included, quantised once), the
file about a quarter of fp32, no accuracy collapse, the keep-float fallback, the budget gate,
and the stage end to end through the runner (finetune -> export_onnx -> quantize)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from albert_edge.schema import ConfigError, build
from albert_edge.stages.quantize import QuantizeConfig
from compress.onnx_graph import initializer_bytes, matmul_report, preoptimize
from compress.onnx_int8 import QuantSpec, Sensitivity, keep_float_search, quantizable_nodes, quantize_onnx
from edge_runtime import open_model
from tests.conftest import run_yaml, write_yaml

torch.set_num_threads(1)

# Same defaults and teacher step as conftest.TINY_YAML, so the runner reuses the session's teacher.
HEAD = """\
version: 1
defaults:
  seed: 7
  threads: 1
  task: {task}
  budget: {{max_accuracy_drop: {budget}, min_agreement: {agreement}}}
pipelines:
  q:
    model: "{model}"
    stages:
      - finetune: {{id: teacher, train: {train}}}
      - export_onnx: {{optimize: false, parity_rows: 32}}
      - quantize: {quantize}
"""
TEACHER_TRAIN = "{epochs: 3, batch_size: 32, lr: 3.0e-3, evals_per_epoch: 1}"
SST2_TASK = "{name: sst2, max_train_rows: 400, max_eval_rows: 120, max_seq_len: 64}"


def _yaml(tmp_path, quantize: str, budget: float = 100.0, model: str = "config:tiny", train: str = TEACHER_TRAIN, task: str = SST2_TASK,
          agreement: float = 0.0):
    """agreement: the budget's min_agreement; 0 by default, as the near-chance tiny teacher's
    int8 agreement depends on the CPU's kernels (tests that need it binding set it)."""
    return write_yaml(tmp_path / "p.yaml", HEAD.format(budget=budget, model=model, train=train, quantize=quantize, task=task,
                                                       agreement=agreement))


def _shared_albert(layers: int = 4, seed: int = 0, hidden: int = 128):
    """One ALBERT layer shared by every repeat (num_hidden_groups=1), small vocab so encoder
    weights, not embeddings, dominate the file."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    torch.manual_seed(seed)
    cfg = AlbertConfig(vocab_size=1000, embedding_size=64, hidden_size=hidden, num_hidden_layers=layers, num_hidden_groups=1,
                       num_attention_heads=4, intermediate_size=4 * hidden, hidden_act="gelu", num_labels=2, pad_token_id=0)
    return AlbertForSequenceClassification(cfg).eval()


def _raw_export(model, path):
    """A plain TorchScript export WITHOUT export.onnx's graph tidying: shared weights reach the
    later layers through Identity nodes, the layout that trips ONNX Runtime's quantizer."""
    ids = torch.randint(5, 1000, (2, 16))
    names = ["input_ids", "attention_mask", "token_type_ids"]

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, a, b, c):
            return self.m(input_ids=a, attention_mask=b, token_type_ids=c).logits

    torch.onnx.export(Logits(model), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path), input_names=names,
                      output_names=["logits"], dynamic_axes={n: {0: "b", 1: "s"} for n in names}, opset_version=17, dynamo=False)
    return path


def _feeds(n=8, seq=20, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 1000, (n, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 12:] = 0
    return ids, mask, np.zeros_like(ids)


def test_shared_weight_matmuls_all_int8_once_and_quarter_size(tmp_path):
    layers = 4
    model = _shared_albert(layers, hidden=256)  # big enough that graph bytes do not swamp the ratio
    src = _raw_export(model, tmp_path / "raw.onnx")
    fp32 = matmul_report(src)
    assert fp32.weight_int8 == 0 and fp32.weight_total == 1 + 6 * layers + 2  # mapping, 6 per layer, pooler, classifier

    # The pitfall: quantising the export as it is leaves most of the shared encoder float.
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(tmp_path / "naive.onnx"), weight_type=QuantType.QInt8)
    naive = matmul_report(tmp_path / "naive.onnx")
    assert naive.weight_int8 < naive.weight_total

    pre = preoptimize(src, tmp_path / "pre.onnx")
    out = quantize_onnx(pre, tmp_path / "int8.onnx", QuantSpec("dynamic"))
    rep = matmul_report(out)
    assert rep.weight_total == fp32.weight_total
    assert rep.weight_int8 == rep.weight_total, rep.float_weight_nodes  # every MatMul of every layer
    m = onnx.load(str(out))
    int8_weights = [i for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8_weights) == 1 + 6 + 2  # the shared layer's six weights are stored once, not once per layer
    weights = initializer_bytes(out)
    assert 0.24 < sum(weights.values()) / sum(initializer_bytes(src).values()) < 0.27, weights  # int8 weights, fp32 biases
    ratio = out.stat().st_size / src.stat().st_size
    assert 0.24 < ratio < 0.30, ratio  # the file, graph included

    ids, mask, tt = _feeds()
    ref = open_model(str(src), threads=1)(ids, mask, tt)
    # int8 close to fp32: the file's arithmetic, free of CPU-specific int8 kernels (see the static test)
    assert np.abs(ref - _int8_in_float(out, ids, mask, tt)).max() < 0.1 * np.abs(ref).max() + 1e-3
    got = open_model(str(out), threads=1)(ids, mask, tt)  # this CPU's kernels: not collapsed
    assert np.isfinite(got).all() and np.abs(ref - got).max() < np.abs(ref - ref.mean(0)).max()


@pytest.mark.kernels
def test_dynamic_attention_also_quantises_the_attention_matmuls_with_the_same_weights(tmp_path):
    """Optimum's route: the attention's two activation MatMuls per layer become dynamic int8 too;
    the weight MatMuls and their int8 weights are exactly those of plain dynamic int8."""
    pre = preoptimize(_raw_export(_shared_albert(layers=2), tmp_path / "raw.onnx"), tmp_path / "pre.onnx")
    plain_spec, attn_spec = QuantSpec("dynamic"), QuantSpec("dynamic-attention")
    assert (plain_spec.file_tag, attn_spec.file_tag, QuantSpec("static").file_tag) == ("int8-dynamic", "int8-dynamic-attention",
                                                                                         "int8-static")
    plain = matmul_report(quantize_onnx(pre, tmp_path / "plain.onnx", plain_spec))
    attn = matmul_report(quantize_onnx(pre, tmp_path / "attn.onnx", attn_spec))
    assert plain.activation_total == attn.activation_total == 2 * 2  # scores and context, per layer
    assert plain.activation_int8 == 0 and attn.activation_int8 == attn.activation_total
    assert plain.weight_int8 == attn.weight_int8 == attn.weight_total == 1 + 6 * 2 + 2

    def int8_weights(path):
        return {i.name: i.raw_data for i in onnx.load(str(path)).graph.initializer if i.data_type == onnx.TensorProto.INT8}

    assert int8_weights(tmp_path / "plain.onnx") == int8_weights(tmp_path / "attn.onnx")
    # The keep-float fallback may keep those MatMuls float too, in this mode only.
    extra = set(quantizable_nodes(pre, attn_spec)) - set(quantizable_nodes(pre, plain_spec))
    assert len(extra) == 2 * 2 and all("attention" in n for n in extra), extra
    ids, mask, tt = _feeds()
    ref = open_model(str(pre), threads=1)(ids, mask, tt)
    got = open_model(str(tmp_path / "attn.onnx"), threads=1)(ids, mask, tt)
    assert np.isfinite(got).all() and np.abs(ref - got).max() < np.abs(ref - ref.mean(0)).max()  # not collapsed


@pytest.mark.kernels
@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_static_qdq_is_u8_s8_and_covers_every_matmul(method, tmp_path):
    from albert_edge.data import Encoded

    model = _shared_albert(layers=2)
    pre = preoptimize(_raw_export(model, tmp_path / "raw.onnx"), tmp_path / "pre.onnx")
    ids, mask, tt = _feeds(n=40)
    rows = [list(r[: 5 + i % 16]) for i, r in enumerate(ids)]  # ragged lengths over >1 batch, as real sentences are
    calib = Encoded(rows, [[0] * len(r) for r in rows], [0] * len(rows))
    out = quantize_onnx(pre, tmp_path / "qdq.onnx", QuantSpec("static", method), calib=calib)
    rep = matmul_report(out)
    assert rep.weight_int8 == rep.weight_total == 1 + 6 * 2 + 2
    assert rep.activation_int8 == rep.activation_total == 2 * 2  # attention scores and context, per layer
    m = onnx.load(str(out))
    inits = {i.name: i for i in m.graph.initializer}
    q_types = {inits[n.input[2]].data_type for n in m.graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits}
    assert q_types == {onnx.TensorProto.UINT8}  # activations u8 (s8s8 is slower on x86)
    # Every int8 weight is the fp32 weight rounded to its own step: within half a step.
    fp32_w = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(pre)).graph.initializer}
    checked = set()
    for node in m.graph.node:
        q = inits.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if q is None or q.data_type != onnx.TensorProto.INT8 or q.name.removesuffix("_quantized") not in fp32_w:
            continue
        step = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zero = onnx.numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2 else 0.0
        deq = (onnx.numpy_helper.to_array(q).astype(np.float64) - zero) * step
        err = np.abs(deq - fp32_w[q.name.removesuffix("_quantized")]).max()
        assert err <= 0.5 * step.max() * (1 + 1e-5), (q.name, err, step)
        checked.add(q.name)
    assert len(checked) == 1 + 6 + 2  # the shared layer's weights are stored once
    ref = open_model(str(pre), threads=1)(ids, mask, tt)
    # The file's own arithmetic (Q/DQ rounding run in float, no int8 kernel): CPU-independent,
    # so it carries the numeric bound.
    assert np.abs(ref - _int8_in_float(out, ids, mask, tt)).max() < 0.1 * np.abs(ref).max() + 1e-3
    # The CPU's int8 kernels need not reproduce that arithmetic: MLAS's AVX2 u8s8 kernel
    # (vpmaddubsw) saturates pairs of products at int16, which no step size bounds (about 3x the
    # error of VNNI/SSE here). What holds on every path: the file still tells inputs apart
    # better than any input-blind file (the row-mean logits) would.
    got = open_model(str(out), threads=1)(ids, mask, tt)
    assert np.isfinite(got).all() and np.abs(ref - got).max() < np.abs(ref - ref.mean(0)).max()


def _int8_in_float(path, ids, mask, tt) -> np.ndarray:
    """Run an int8 file's own arithmetic without any CPU-specific int8 kernel: graph
    optimisations off (QDQ's Quantize/DequantizeLinear stay elementwise rounding, MatMuls float)
    and every MatMulInteger (dynamic int8) rewritten as a float MatMul of the zero-point-shifted
    integers, which is exact while the sums stay below 2**24 and within float rounding beyond."""
    import onnxruntime as ort

    model = onnx.load(str(path))
    graph = model.graph
    nodes, swapped = [], set()
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            nodes.append(node)
            continue
        ins = list(node.input) + [""] * (4 - len(node.input))
        side = []
        for k, (x, zp) in enumerate(((ins[0], ins[2]), (ins[1], ins[3]))):
            xf = f"{node.name}_f{k}"
            nodes.append(onnx.helper.make_node("Cast", [x], [xf], to=onnx.TensorProto.FLOAT))
            if zp:
                nodes.append(onnx.helper.make_node("Cast", [zp], [xf + "_zp"], to=onnx.TensorProto.FLOAT))
                nodes.append(onnx.helper.make_node("Sub", [xf, xf + "_zp"], [xf + "_c"]))
                xf += "_c"
            side.append(xf)
        nodes.append(onnx.helper.make_node("MatMul", side, list(node.output), name=node.name))
        swapped.add(node.output[0])  # now float; the Cast after it becomes float -> float
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [vi for vi in graph.value_info if vi.name not in swapped]
    del graph.value_info[:]
    graph.value_info.extend(kept)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": tt}
    return sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})[0]


def test_report_counts_float_matmul_of_unquantised_file(tmp_path):
    pre = preoptimize(_raw_export(_shared_albert(layers=1), tmp_path / "raw.onnx"), tmp_path / "pre.onnx")
    rep = matmul_report(pre)
    assert rep.weight_int8 == 0 and len(rep.float_weight_nodes) == rep.weight_total == 1 + 6 + 2
    keep = list(rep.float_weight_nodes[:2])
    out = quantize_onnx(pre, tmp_path / "part.onnx", QuantSpec("dynamic"), exclude=keep)
    assert sorted(matmul_report(out).float_weight_nodes) == sorted(keep)


def test_gemm_nodes_can_be_kept_float_and_probed(tmp_path):
    """Pooler and classifier are Gemm nodes; ORT's dynamic quantizer renames them to
    `<name>_MatMul`, which once made the fallback unable to keep them float or probe them."""
    pre = preoptimize(_raw_export(_shared_albert(layers=1), tmp_path / "raw.onnx"), tmp_path / "pre.onnx")
    gemms = [n for n in matmul_report(pre).float_weight_nodes if n.endswith("Gemm")]
    assert len(gemms) == 2, gemms
    kept = quantize_onnx(pre, tmp_path / "keep.onnx", QuantSpec("dynamic"), exclude=gemms)
    assert sorted(matmul_report(kept).float_weight_nodes) == sorted(gemms)
    probe = quantize_onnx(pre, tmp_path / "probe.onnx", QuantSpec("dynamic"), only=gemms[-1:])
    assert matmul_report(probe).weight_int8 == 1


def test_keep_float_search_groups_and_stops():
    ranking = [Sensitivity(f"n{i}", 1.0 / (i + 1), 0.0) for i in range(10)]
    seen = []

    def build(nodes):
        seen.append(list(nodes))
        return 0.5 + 0.05 * len(nodes)  # each float node wins back accuracy

    res = keep_float_search(ranking, build, lambda a: a >= 0.75, group_size=3, max_float_nodes=8)
    assert res.met and res.float_nodes == ["n0", "n1", "n2", "n3", "n4", "n5"]
    assert [len(s) for s in seen] == [3, 6]
    res = keep_float_search(ranking, build, lambda a: a >= 0.99, group_size=3, max_float_nodes=8)
    assert not res.met and len(res.float_nodes) == 8 and [len(s.float_nodes) for s in res.steps] == [3, 6, 8]


def test_config_checks():
    with pytest.raises(ConfigError, match="unknown key"):  # quantisation-aware training is not offered
        build(QuantizeConfig, {"mode": "qat"}, "quantize")
    with pytest.raises(ConfigError, match="primary"):
        build(QuantizeConfig, {"onnx": ["dynamic"], "primary": "onnx-int8-static"}, "quantize")
    with pytest.raises(ConfigError, match="INC's tuning makes dynamic and static files only"):
        build(QuantizeConfig, {"backend": "inc", "onnx": ["dynamic-attention"]}, "quantize")
    assert build(QuantizeConfig, {"onnx": ["dynamic", "dynamic-attention"]}, "quantize").variant_names() == [
        "onnx-int8-dynamic", "onnx-int8-dynamic-attention"]
    with pytest.raises(ConfigError, match="calibration.method"):
        build(QuantizeConfig, {"calibration": {"method": "kl"}}, "quantize")
    cfg = build(QuantizeConfig, {"onnx": ["static"], "calibration": {"method": "entropy", "rows": 32}}, "quantize")
    assert cfg.variant_names() == ["onnx-int8-static"]


def test_stage_runs_and_output_loads(tiny_teacher, tiny_cache, tmp_path):
    res = run_yaml(_yaml(tmp_path, "{calibration: {rows: 64}}"), "q", tiny_cache)
    assert res.exit_code == 0, res.error
    assert res.steps[0].status == "reused"
    art = res.steps[-1].artifact
    m = art.metrics
    assert art.kind == "quantized" and m["primary"] == "onnx-int8-dynamic"
    assert m["matmuls_int8"] == m["matmuls_total"] == 1 + 6 * 2 + 2
    assert 0.2 < m["size_ratio"] < 0.32
    assert m["fp32_agreement"] >= 0.95 and abs(m["macro_f1"] - m["fp32_val_accuracy"]) < 0.5  # no collapse
    variants = {v["name"]: v for v in art.variants()}
    assert set(variants) == {"onnx-int8-dynamic", "onnx-int8-static"}
    ids, mask, tt = _feeds(n=3)
    for v in variants.values():
        path = art.path / v["file"]
        assert v["format"] == "onnx" and v["size_bytes"] == path.stat().st_size and len(v["sha256"]) == 64
        assert v["matmuls"]["float_weight_matmuls"] == [] and v["float_nodes"] == []
        logits = open_model(str(path), threads=1)(ids, mask, tt)
        assert logits.shape == (3, 2) and np.isfinite(logits).all()
        assert 0.0 <= v["accuracy"] <= 1.0 and v["agreement"] >= 0.95
    assert variants["onnx-int8-static"]["calibration"]["rows"] == 64
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["info"]["primary"] == "onnx-int8-dynamic"


def test_stage_makes_the_dynamic_attention_file_beside_plain_dynamic(tiny_teacher, tiny_cache, tmp_path):
    res = run_yaml(_yaml(tmp_path, "{onnx: [dynamic, dynamic-attention], calibration: {rows: 16}, fallback: {enabled: false}}"), "q",
                   tiny_cache)
    assert res.exit_code == 0, res.error
    art = res.steps[-1].artifact
    variants = {v["name"]: v for v in art.variants()}
    assert set(variants) == {"onnx-int8-dynamic", "onnx-int8-dynamic-attention"}
    attn, plain = variants["onnx-int8-dynamic-attention"], variants["onnx-int8-dynamic"]
    assert attn["file"] == "model.int8-dynamic-attention.onnx" and attn["precision"] == plain["precision"] == "int8-dynamic"
    assert attn["attention_matmuls_int8"] and not plain["attention_matmuls_int8"]
    assert attn["matmuls"]["activation_matmuls_int8"] == attn["matmuls"]["activation_matmuls"] > 0
    assert plain["matmuls"]["activation_matmuls_int8"] == 0
    assert attn["verdict"]["split"] == "validation" and attn["sha256"] != plain["sha256"]


PLANTED_ROWS = 60  # per class, in each of dev and train


@dataclass
class Planted:
    """A planted model and the task whose labels are its own fp32 predictions."""

    model_dir: Path
    data_dir: Path
    margin: float  # smallest |fp32 logit margin| over the planted rows
    collapse_class: int  # what the all-int8 file predicts for every row

    def task(self) -> str:
        rows = 4 * PLANTED_ROWS
        return f"{{name: planted, data_dir: '{self.data_dir}', max_train_rows: {rows}, max_eval_rows: {rows}, max_seq_len: 64}}"

    def collapsed_val_accuracy(self) -> float:
        """What the one-class int8 file scores on the validation rows (carved from the planted
        train file, whose labels are the model's own fp32 predictions): the share of that class."""
        from albert_edge.data import TaskConfig, read_examples

        task = TaskConfig(name="planted", data_dir=str(self.data_dir), max_train_rows=4 * PLANTED_ROWS, max_seq_len=64)
        labels = np.asarray(read_examples(task, "validation").labels)
        return float((labels == self.collapse_class).mean())


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Planted:
    """An untrained tiny ALBERT (init std 0.1, so its logits depend on the input) whose int8
    failure is certain on any CPU, and a task on which its fp32 accuracy is 100 % by construction.

    The plant: classifier column 0 set to M (>= 300x every other classifier weight) in BOTH
    class rows. fp32 logit margins are unchanged (the column adds the same M*p0 to both
    logits), but per-tensor int8 of that weight has step M/127, so every other classifier
    weight rounds to 0 and both class columns become the same integers: the int8 classifier
    outputs equal logits up to the float bias, i.e. one class for every row, whatever the
    kernel (no pair of products can saturate int16 either: one non-zero weight per column).
    The labels: SST-2 sentences labelled with the planted model's own fp32 predictions, the
    PLANTED_ROWS most positive and most negative margins per split, the bias shifted so the
    two groups straddle 0. So the teacher scores 100 %, the all-int8 file exactly 50 %.
    """
    from albert_edge import models
    from albert_edge.data import TaskConfig, encode, read_examples
    from export.parity import torch_logits

    model, tok, _ = models.load_source('config:{"base": "tiny", "initializer_range": 0.1}', seed=0)
    model.eval()
    ex = read_examples(TaskConfig(name="sst2", max_train_rows=1200, max_seq_len=64), "train")
    with torch.no_grad():
        w = model.classifier.weight  # [classes, hidden]
        w[:, 0] = 300.0 * w.abs().max()
        model.classifier.bias.zero_()
    logits = torch_logits(model, encode(tok, ex, 64))
    margin = logits[:, 1] - logits[:, 0]
    order = np.argsort(margin, kind="stable")
    k = 2 * PLANTED_ROWS
    low, high = order[:k], order[-k:]
    shift = float(margin[low].max() + margin[high].min()) / 2  # the decision threshold between the groups
    with torch.no_grad():
        model.classifier.bias[1] = -shift
    root = tmp_path_factory.mktemp("planted")
    models.save_model(model, tok, root / "model", {"planted": "classifier column 0 huge in both classes"})
    rng = np.random.default_rng(0)
    for name, part in (("dev.tsv", 0), ("train.tsv", 1)):
        rows = [(i, 0) for i in low[part::2]] + [(i, 1) for i in high[part::2]]
        rows = [rows[j] for j in rng.permutation(len(rows))]
        text = "".join(f"{ex.texts[i].replace(chr(9), ' ')}\t{label}\n" for i, label in rows)
        (root / name).write_text("sentence\tlabel\n" + text)
    gap = float(margin[high].min() - margin[low].max()) / 2
    assert gap > 1e-2, f"planted margins too small ({gap})"
    return Planted(root / "model", root, gap, int(-shift > 0))


@pytest.mark.kernels
def test_fallback_keeps_sensitive_nodes_float_and_lists_them(planted, tmp_path):
    # budget 10 points: the all-int8 file loses 50 by construction, the fallback must win it back
    q = "{onnx: [dynamic], calibration: {rows: 64}, fallback: {group_size: 2, max_float_nodes: 8}}"
    res = run_yaml(_yaml(tmp_path, q, budget=10.0, model=f"hf:{planted.model_dir}", train="{epochs: 0}", task=planted.task()),
                   "q", tmp_path / "cache")
    assert res.exit_code == 0, res.error
    art = res.steps[-1].artifact
    teacher_acc = res.steps[0].metrics["accuracy"]
    assert teacher_acc == 1.0  # the labels are the planted model's own fp32 predictions
    v = art.variants()[0]
    fb = v["fallback"]
    assert fb["all_int8"]["accuracy"] == planted.collapsed_val_accuracy()  # int8 predicts one class for every row
    assert fb["met_budget"] and art.metrics["accuracy"] >= teacher_acc - 0.10
    nodes = art.info["float_nodes"]["onnx-int8-dynamic"]
    assert 1 <= len(nodes) <= 8
    assert "classifier" in nodes[0]["node"] and nodes[0]["sensitivity_rank"] == 1, nodes
    assert all("budget 10" in n["reason"] for n in nodes)
    # the file's float MatMuls are exactly the ones the fallback kept float
    float_mm = matmul_report(art.path / v["file"]).float_weight_nodes
    assert set(float_mm) <= {n["node"] for n in nodes} and float_mm
    assert art.metrics["float_nodes"] == len(nodes)


@pytest.mark.kernels
def test_budget_gate_fails_run_and_keeps_artifact(planted, tmp_path):
    # fallback off and parity off: the gate alone meets a file 50 points below the teacher
    q = "{onnx: [dynamic], fallback: {enabled: false}}"
    res = run_yaml(_yaml(tmp_path, q, budget=10.0, model=f"hf:{planted.model_dir}", train="{epochs: 0}", task=planted.task()),
                   "q", tmp_path / "cache")
    assert res.exit_code == 1, res.error
    lost = 100 * (1 - planted.collapsed_val_accuracy())  # the teacher scores 100 % by construction
    assert "below the teacher" in res.error and "budget 10" in res.error and f"{lost:.2f} points" in res.error, res.error
    step = res.steps[-1]
    assert step.status == "gate-failed" and step.artifact is not None
    assert step.artifact.metrics["accuracy"] == 0.5
    assert (step.artifact.path / "manifest.json").is_file() and (step.artifact.path / "model.int8-dynamic.onnx").is_file()


@pytest.mark.kernels
def test_collapsed_int8_fails_parity(planted, tmp_path):
    q = "{onnx: [dynamic], fallback: {enabled: false}}"
    res = run_yaml(_yaml(tmp_path, q, budget=100.0, model=f"hf:{planted.model_dir}", train="{epochs: 0}", task=planted.task(),
                         agreement=0.99), "q", tmp_path / "cache")
    agree = 100 * planted.collapsed_val_accuracy()  # fp32 predictions are the labels: agreement equals accuracy
    assert res.exit_code == 1 and "agreement with the fp32 model" in res.error and f"{agree:.2f}%" in res.error, res.error


def test_inc_backend(tiny_teacher, tiny_cache, tmp_path):
    from compress.onnx_inc import inc_missing

    missing = inc_missing()
    if missing:
        pytest.skip(missing)
    q = "{backend: inc, onnx: [dynamic], inc_max_trials: 3}"
    res = run_yaml(_yaml(tmp_path, q, budget=1.0), "q", tiny_cache)
    assert res.exit_code == 0, res.error
    v = res.steps[-1].artifact.variants()[0]
    assert v["backend"] == "inc" and v["inc"]["baseline"] is not None and len(v["inc"]["trials"]) >= 1
    assert v["matmuls"]["weight_matmuls_int8"] >= 1


@pytest.mark.slow
def test_dynamo_export_with_stale_value_info(tmp_path):
    """dynamo routes shared weights through Transpose nodes and leaves value_info behind."""
    model = _shared_albert(layers=3)
    ids = torch.randint(5, 1000, (2, 16))
    dim_b, dim_s = torch.export.Dim("b"), torch.export.Dim("s")
    shapes = {k: {0: dim_b, 1: dim_s} for k in ("input_ids", "attention_mask", "token_type_ids")}
    src = tmp_path / "dyn.onnx"
    torch.onnx.export(
        model,
        (),
        str(src),
        kwargs={"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)},
        dynamic_shapes=shapes,
        dynamo=True,
        external_data=False,
        opset_version=17,
    )
    out = quantize_onnx(preoptimize(src, tmp_path / "pre.onnx"), tmp_path / "q.onnx", QuantSpec("dynamic"))
    rep = matmul_report(out)
    assert rep.weight_int8 == rep.weight_total == 1 + 6 * 3 + 2


def test_tflite_int8_from_tflite_artifact(tiny_teacher, tiny_cache, tmp_path):
    """The TFLite int8 path in the default suite: made from the tflite artifact's fp32 file with
    its buckets, every weight matmul int8 (the audit), and judged by the budget on validation rows."""
    pytest.importorskip("litert_torch")
    text = HEAD.format(budget=100.0, agreement=0.0, model="config:tiny", train=TEACHER_TRAIN, task=SST2_TASK,
                       quantize="{onnx: [], tflite: [int8-dynamic]}")
    text = text.replace(
        "      - quantize:", "      - export_tflite: {buckets: [32, 64], precisions: [fp32], parity_rows: 16}\n      - quantize:"
    )
    res = run_yaml(write_yaml(tmp_path / "p.yaml", text), "q", tiny_cache)
    assert res.exit_code == 0, res.error
    art = res.steps[-1].artifact
    (v,) = art.variants()
    assert v["name"] == "tflite-int8-dynamic" and v["from_float_file"] and v["buckets"] == [32, 64] and v["size_ratio"] < 0.6
    mm = v["matmuls"]
    assert mm["weight_matmuls"] > 0 and mm["weight_matmuls_int8"] == mm["weight_matmuls"] and mm["float_weight_matmuls"] == []
    assert v["verdict"]["split"] == "validation" and v["verdict"]["rows"] == v["parity_rows"] > 0 and v["verdict"]["passed"]
    assert art.metrics["verdict"]["passed"] and art.metrics["variants"]["tflite-int8-dynamic"]["passed"]
    # within budget by construction (100 points, agreement 0): no fallback, nothing kept float
    assert v["float_nodes"] == [] and "fallback" not in v and art.metrics["float_nodes"] == 0 and not art.info["float_nodes"]


def _litert_or_skip() -> None:
    """Skip where litert-torch cannot be imported: not installed, or refused by the CPU (jaxlib,
    under litert-torch, raises at import on a CPU without AVX, e.g. qemu's Nehalem)."""
    try:
        import litert_torch  # noqa: F401
        from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except Exception as err:  # noqa: BLE001 (any import failure means: no TFLite here)
        pytest.skip(f"litert-torch unavailable: {type(err).__name__}: {err}")


def _tflite_yaml(tmp_path, quantize: str, **kwargs):
    """_yaml with an export_tflite step (fp32 only, the file quantize starts from) before quantize."""
    path = _yaml(tmp_path, quantize, **kwargs)
    text = path.read_text().replace(
        "      - quantize:",
        "      - export_tflite: {buckets: [32, 64], precisions: [fp32], parity_rows: 16, atol: 1.0e-3}\n      - quantize:")
    return write_yaml(path, text)


@pytest.mark.kernels
def test_tflite_fallback_keeps_the_classifier_float_and_the_audit_accepts_exactly_that(planted, tmp_path):
    """The planted classifier makes the all-int8 TFLite file predict one class for every row on
    any CPU (see `planted`: both weight rows round to the same integers, per channel too), so
    the fallback must fire; keeping every weight matmul float reproduces the fp32 file, so it
    must also succeed within the cap (16 >= the tiny model's 15 weight matmuls)."""
    _litert_or_skip()
    from albert_edge.artifacts import sha256_file
    from export.tflite_audit import matmul_report as tflite_report
    from export.tflite_audit import unexpected_float

    q = "{onnx: [], tflite: [int8-dynamic], calibration: {rows: 64}, fallback: {group_size: 1, max_float_nodes: 16, sensitivity_rows: 32}}"
    res = run_yaml(_tflite_yaml(tmp_path, q, budget=10.0, model=f"hf:{planted.model_dir}", train="{epochs: 0}", task=planted.task(),
                                agreement=0.9), "q", tmp_path / "cache")
    assert res.exit_code == 0, res.error
    art = res.steps[-1].artifact
    assert res.steps[0].metrics["accuracy"] == 1.0  # the labels are the planted model's own fp32 predictions
    (v,) = art.variants()
    fb = v["fallback"]
    assert fb["all_int8"]["accuracy"] == planted.collapsed_val_accuracy() and not fb["all_int8"]["passed"]
    assert fb["met_budget"] and fb["chosen_on"] == "validation" and v["verdict"]["passed"] and art.metrics["verdict"]["passed"]
    nodes = v["float_nodes"]
    assert nodes == art.info["float_nodes"]["tflite-int8-dynamic"] and art.metrics["float_nodes"] == len(nodes) >= 1
    # the classifier, alone int8, flips every row of one class: ranked first, kept float first
    assert nodes[0]["weight"] == "classifier.weight" and nodes[0]["sensitivity_rank"] == 1, nodes
    assert [n["sensitivity_rank"] for n in nodes] == list(range(1, len(nodes) + 1))
    assert [s["float_nodes"] for s in fb["steps"]] == list(range(1, len(nodes) + 1))  # group_size 1: one more per step
    assert all("budget 10" in n["reason"] and n["op"] in ("FULLY_CONNECTED", "BATCH_MATMUL") for n in nodes)
    # the file keeps exactly the listed weight matmuls float, every other one int8
    path = art.path / v["file"]
    rep = tflite_report(path)
    listed = {n["node"] for n in nodes}
    assert set(rep.float_weight_nodes) == listed and rep.weight_int8 == rep.weight_total - len(listed)
    assert v["matmuls"]["float_weight_matmuls"] == sorted(listed, key=list(rep.float_weight_nodes).index)
    # the audit accepts exactly those: one fewer listed, and it names the one left out
    assert unexpected_float(path, listed) == []
    assert unexpected_float(path, listed - {nodes[0]["node"]}) == [nodes[0]["node"]]
    assert v["size_bytes"] == path.stat().st_size and v["sha256"] == sha256_file(path)
