"""ONNX export: round-trip parity through the real runner, both exporters, shared weights kept
shared, every weight MatMul visible to the quantizer, measured ORT optimisation level."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import TINY_YAML, run_yaml, write_yaml

EXPORT_STAGES = """\
  tiny-export:
    model: "config:tiny"
    stages:
      - finetune: {id: teacher, train: {epochs: 3, batch_size: 32, lr: 3.0e-3, evals_per_epoch: 1}}
      - export_onnx: {parity_rows: 48, timing_runs: 5}
      - bundle: {golden_rows: 12}
"""


def export_pipeline(tmp_path, cache, tiny_teacher):
    """Run teacher (reused from the session cache) -> export_onnx -> bundle; return the result."""
    path = write_yaml(tmp_path / "pipelines.yaml", TINY_YAML + EXPORT_STAGES)
    result = run_yaml(path, "tiny-export", cache)
    assert result.exit_code == 0, result.error
    assert result.steps[0].artifact.key == tiny_teacher.key  # same teacher, not retrained
    return result


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_cache, tiny_teacher):
    return export_pipeline(tmp_path_factory.mktemp("export"), tiny_cache, tiny_teacher)


def _tiny_model():
    from albert_edge.models import load_source

    model, _, _ = load_source("config:tiny", 2, 0)
    return model.eval()


def test_export_stage_round_trip(exported):
    step = next(s for s in exported.steps if s.stage == "export_onnx")
    art = step.artifact
    m = art.metrics
    assert m["max_abs_diff"] <= 1e-4 and m["agreement"] == 1.0
    teacher = exported.steps[0].metrics
    assert m["exporter"] in ("torchscript", "dynamo") and m["parity_rows"] == min(48, teacher["val_n"])  # parity on validation rows
    assert m["accuracy"] == pytest.approx(teacher["accuracy"], abs=1e-9)  # fp32 file: same predictions on the full eval set
    assert m["val_accuracy"] == pytest.approx(teacher["val_accuracy"], abs=1e-9)
    names = [v["name"] for v in art.variants()]
    assert names[0] == "onnx-fp32"
    for v in art.variants():
        f = art.path / v["file"]
        assert f.is_file() and f.stat().st_size == v["size_bytes"]
        assert v["format"] == "onnx" and v["precision"] == "fp32" and "seq_len" not in v
        assert v["max_abs_diff"] <= 1e-4 and 0.0 <= v["accuracy"] <= 1.0
    timing = art.info["ort_timing"]
    assert set(timing["level_ms"]) == {"disabled", "basic", "extended", "all"}
    # optimize: auto always holds the extended graph, whatever the timing said
    assert (art.path / "model.opt.onnx").is_file() and "onnx-fp32-opt" in names and m["optimized_level"] == "extended"


def test_exported_graph_io(exported):
    import onnx

    art = next(s for s in exported.steps if s.stage == "export_onnx").artifact
    m = onnx.load(str(art.path / "model.onnx"))
    assert [i.name for i in m.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in m.graph.output] == ["logits"]
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    for i in m.graph.input:
        dims = i.type.tensor_type.shape.dim
        assert i.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert dims[0].dim_param and dims[1].dim_param  # dynamic batch and sequence


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_both_exporters_match_torch_and_expose_weights(tmp_path, exporter):
    import onnx
    import torch

    from albert_edge.models import load_source
    from export.onnx import check_shared_weights, export_onnx
    from export.parity import check

    model = load_source('config:{"base": "tiny", "num_hidden_groups": 1}', 2, 0)[0].eval()  # one shared layer, like ALBERT
    path = tmp_path / f"{exporter}.onnx"
    info = export_onnx(model, path, exporter=exporter)
    assert info["exporter"] == exporter and path.stat().st_size == info["size_bytes"]
    check_shared_weights(path, sum(p.numel() for p in model.parameters()))
    # every Linear's MatMul/Gemm reads an initializer (what onnxruntime's quantizer needs)
    g = onnx.load(str(path)).graph
    inits = {i.name for i in g.initializer}
    matmuls = [n for n in g.node if n.op_type in ("MatMul", "Gemm")]
    weighted = [n for n in matmuls if n.input[1] in inits]
    layers = model.config.num_hidden_layers
    assert len(weighted) == len(matmuls) - 2 * layers  # all but attention's QK^T and PV, shared layer unrolled in compute only
    assert len(weighted) == 6 * layers + 3  # q, k, v, dense, ffn, ffn_output per layer + embedding map, pooler, classifier
    assert len(g.value_info) == 0
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, size=(4, 23))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    mask[3, 15:] = 0
    with torch.no_grad():
        ref = model(
            input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), token_type_ids=torch.zeros_like(torch.tensor(ids))
        ).logits.numpy()
    from edge_runtime import open_model

    got = open_model(str(path), threads=1)(ids, mask)
    assert check(exporter, ref, got, ref.argmax(-1), precision="fp32").ok


def test_shared_weights_detects_unrolled_graph(tmp_path):
    from export.onnx import ExportError, check_shared_weights, export_onnx

    model = _tiny_model()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    n = sum(p.numel() for p in model.parameters())
    assert check_shared_weights(path, n)["weight_ratio"] <= 1.0
    with pytest.raises(ExportError, match="unrolled"):
        check_shared_weights(path, n // 2)  # as if the file held twice the weights


def test_time_levels_measures_a_valid_optimised_graph(tmp_path):
    from albert_edge.data import Encoded
    from export.onnx import ORT_LEVELS, export_onnx, optimize_onnx, resolve_optimize, time_levels
    from export.parity import check, file_logits

    assert resolve_optimize("auto") == resolve_optimize(True) == "extended"
    assert resolve_optimize("none") is resolve_optimize(False) is None and resolve_optimize("basic") == "basic"
    model = _tiny_model()
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    opt = optimize_onnx(path, tmp_path / "model.opt.onnx", "extended")
    t = time_levels(path, opt, seq_len=32, runs=5)
    assert t["best_level"] in ORT_LEVELS and all(v > 0 for v in t["level_ms"].values())
    assert t["opt_ms"] > 0 and t["plain_ms"] > 0 and opt.is_file()  # timing never removes the file
    enc = Encoded([[2, *range(10, 40), 3]] * 3, [[0] * 32] * 3, [0, 1, 0])
    ref = file_logits(path, enc)
    assert check("opt", ref, file_logits(opt, enc), enc.labels, precision="fp32").ok


def test_export_stage_fails_cleanly_on_bad_config(tmp_path, tiny_cache, tiny_teacher):
    from albert_edge.config import load_pipeline
    from albert_edge.schema import ConfigError

    bad = TINY_YAML + "  bad:\n    model: \"config:tiny\"\n    stages:\n      - export_onnx: {opset: 11}\n"
    path = write_yaml(tmp_path / "p.yaml", bad)
    with pytest.raises(ConfigError, match="opset"):
        load_pipeline(path, "bad")


def test_albert_base_shared_layer_stays_shared(tmp_path):
    """config:albert-base-v2 (random weights): ~4 bytes x 11.7 M parameters, never the unrolled ~340 MB (about 12 s)."""
    import torch

    from albert_edge.models import count_parameters, load_source
    from export.onnx import check_shared_weights, export_onnx

    torch.set_num_threads(1)
    model, _, _ = load_source("config:albert-base-v2", 2, 0)
    path = tmp_path / "base.onnx"
    info = export_onnx(model.eval(), path)
    params = count_parameters(model)
    assert 11_000_000 < params < 12_500_000
    assert path.stat().st_size <= 50 * 1024 * 1024, path.stat().st_size
    assert check_shared_weights(path, params)["weight_ratio"] <= 1.01
    print(json.dumps({"exporter": info["exporter"], "size_mb": path.stat().st_size / 1e6, "params": params}))


def test_attention_implementation_is_chosen_for_the_trace_and_restored(tmp_path):
    import torch

    from edge_runtime import open_model
    from export.onnx import export_onnx
    from export.parity import check

    model = _tiny_model()
    loaded = model.config._attn_implementation
    rng = np.random.default_rng(1)
    ids = rng.integers(5, 1000, size=(3, 19))
    mask = np.ones_like(ids)
    mask[2, 7:] = 0
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
    for attention in ("eager", "sdpa"):
        path = tmp_path / f"{attention}.onnx"
        info = export_onnx(model, path, attention=attention)
        assert info["attention"] == attention
        assert model.config._attn_implementation == loaded  # the caller's model is left as it was
        got = open_model(str(path), threads=1)(ids, mask)
        assert check(attention, ref, got, ref.argmax(-1), precision="fp32").ok
    with pytest.raises(ValueError, match="attention 'flash'"):
        export_onnx(model, tmp_path / "x.onnx", attention="flash")
