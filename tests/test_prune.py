"""prune: sliced heads/neurons equal the masked model, importance ranking, the cubic schedule,
save/load of sliced models, and both methods end to end through the runner."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from albert_edge.models import count_parameters, load_model, save_model
from albert_edge.schema import ConfigError, build
from albert_edge.stages.prune import PruneConfig
from compress import sparsity as sp
from compress import structured as st
from tests.conftest import TINY_YAML, run_yaml, write_yaml

torch.set_num_threads(1)


def _model(groups: int = 2, layers: int = 2, seed: int = 0):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    from albert_edge.models import ALBERT_TINY

    torch.manual_seed(seed)
    cfg = AlbertConfig(
        num_labels=2, pad_token_id=0, **{**ALBERT_TINY, "vocab_size": 500, "num_hidden_layers": layers, "num_hidden_groups": groups}
    )
    model = AlbertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _batch():
    torch.manual_seed(3)
    ids = torch.randint(5, 500, (4, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": torch.tensor([0, 1, 0, 1])}


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]).logits


def _ce(model, batch):
    return torch.nn.functional.cross_entropy(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
    )


@pytest.mark.parametrize("groups", [2, 1])  # 1: one ALBERT layer shared by both repeats
def test_sliced_model_equals_masked_model_and_is_smaller(groups, tmp_path):
    model = _model(groups=groups)
    batch = _batch()
    h, n = st.taylor_scores(model, [batch], _ce)
    plan = st.Plan(st.select(h, 0.5, False), st.select(n, 0.25, False))
    assert all(len(x) == 2 for x in plan.heads) and all(len(x) == 32 for x in plan.neurons)
    dense = _logits(model, batch)
    with st.masked(model, plan):
        masked = _logits(model, batch)
    assert (masked - dense).abs().max() > 1e-4  # masking really changed the model
    params = count_parameters(model)
    st.apply_plan(model, plan)
    sliced = _logits(model, batch)
    assert (sliced - masked).abs().max() < 1e-5
    assert st.structure_counts(model) == {"heads": 2 * groups, "ffn_neurons": 96 * groups}
    assert model.config.heads_per_group == [2] * groups
    assert count_parameters(model) < params
    # save/load: the sliced shapes survive albert_edge.models.load_model
    from albert_edge.models import albert_tokenizer

    save_model(model, albert_tokenizer(), tmp_path / "m")
    loaded, _, _ = load_model(tmp_path / "m")
    assert (_logits(loaded, batch) - sliced).abs().max() < 1e-6
    assert st.structure_counts(loaded) == st.structure_counts(model)
    assert loaded.albert.encoder.albert_layer_groups[0].albert_layers[0].attention.num_attention_heads == 2


def test_taylor_scores_a_dead_head_zero_and_shared_layer_sums_repeats():
    model = _model(groups=1)
    att = model.albert.encoder.albert_layer_groups[0].albert_layers[0].attention
    d = att.attention_head_size
    with torch.no_grad():
        att.dense.weight[:, 1 * d:2 * d] = 0.0  # head 1 contributes nothing
    batch = _batch()
    h, n = st.taylor_scores(model, [batch], _ce)
    assert len(h) == 1 and h[0][1] == 0.0 and (h[0][[0, 2, 3]] > 0).all()
    assert st.select(h, 1, False) == [[1]]
    # the shared gate's gradient is the sum over both repeats: compare with a per-repeat gate
    g = torch.ones(4, requires_grad=True)
    calls = []

    def hook(_m, a):
        calls.append(1)
        return (a[0] * (g if len(calls) == 1 else torch.ones(4)).repeat_interleave(d),)

    handle = att.dense.register_forward_pre_hook(hook)
    (grad_first,) = torch.autograd.grad(_ce(model, batch), [g])
    handle.remove()
    assert len(calls) == 2
    assert not torch.allclose(grad_first.abs(), h[0])  # one repeat alone is not the full score
    assert all(p.requires_grad for p in model.parameters())  # scoring restored the flags


def test_magnitude_and_global_ranking_keep_one_per_layer():
    model = _model(groups=2)
    with torch.no_grad():
        model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight[:10] *= 0.01
    h, n = st.magnitude_scores(model)
    assert set(range(10)) <= set(st.select(n, 10, False)[0])
    plan = st.select([torch.tensor([1.0, 2.0]), torch.tensor([0.1, 0.2, 5.0])], 4, True)
    assert plan == [[0], [0, 1]]  # at most len-1 per layer, lowest normalised scores first
    assert st.select([torch.tensor([3.0, 1.0, 2.0, 4.0])], 0.5, False) == [[1, 2]]


def test_cubic_schedule_and_gradual_magnitude_pruning_reach_target():
    s = [sp.cubic_sparsity(t, 100, 0.8, 0.1, 0.6) for t in range(101)]
    assert s[0] == s[10] == 0.0 and s[60] == s[100] == 0.8
    assert all(b >= a for a, b in zip(s, s[1:]))
    assert s[20] > 0.8 * (1 - (1 - 0.2) ** 3) - 1e-9 and s[35] > 0.5 * 0.8  # front-loaded, cubic
    model = _model()
    weights = sp.prunable_weights(model)
    assert len(weights) == 12  # 6 Linear weights x 2 groups
    pruner = sp.GradualMagnitudePruner(weights, 0.75, 0.0, 0.5, every=2)
    for step in range(1, 21):
        pruner.on_step(step, 20)
    assert pruner.final_step(20) == 10
    assert abs(sp.measured_sparsity(weights) - 0.75) < 0.01
    assert [t for _, t in pruner.history] == sorted(t for _, t in pruner.history)


def test_config_validation():
    with pytest.raises(ConfigError, match="heads"):
        build(PruneConfig, {"heads": 1.0}, "prune")
    with pytest.raises(ConfigError, match="backend"):
        build(PruneConfig, {"backend": "inc"}, "prune")
    with pytest.raises(ConfigError, match="sparsity"):
        build(PruneConfig, {"method": "unstructured", "sparsity": 1.2}, "prune")
    cfg = build(PruneConfig, {"heads": 2, "ffn": 0.5}, "prune")
    assert isinstance(cfg.heads, int) and isinstance(cfg.ffn, float)


PRUNE_YAML = TINY_YAML + """\
  tiny-prune:
    extends: tiny
    append:
      - prune:
          id: prune-structured
          heads: 0.5
          ffn: 0.5
          score_batches: 4
          recovery: {epochs: 1, batch_size: 32, lr: 1.0e-3}
  tiny-sparse:
    extends: tiny
    append:
      - prune:
          method: unstructured
          sparsity: 0.6
          prune_every: 2
          recovery: {epochs: 1, batch_size: 32, lr: 1.0e-3, evals_per_epoch: 2}
"""


def test_structured_prune_stage_runs_and_output_is_smaller(tiny_teacher, tiny_cache, tmp_path):
    result = run_yaml(write_yaml(tmp_path / "p.yaml", PRUNE_YAML), "tiny-prune", tiny_cache)
    assert result.exit_code == 0, result.error
    art = result.steps[-1].artifact
    m = art.metrics
    assert (m["heads_before"], m["heads_after"]) == (8, 4) and (m["ffn_neurons_before"], m["ffn_neurons_after"]) == (256, 128)
    assert m["params"] < m["params_before"] and 0 <= m["accuracy"] <= 1 and "val_accuracy_before_recovery" in m
    model, _, _ = load_model(art.model_dir)
    assert count_parameters(model) == m["params"]
    assert st.structure_counts(model) == {"heads": 4, "ffn_neurons": 128}
    from albert_edge.metrics import load_predictions

    ids = torch.randint(5, 1000, (2, 12))
    assert model(input_ids=ids).logits.shape == (2, 2)
    assert len(load_predictions(art.path)) == 120


def test_unstructured_prune_stage_reaches_sparsity_and_gzips_smaller(tiny_teacher, tiny_cache, tmp_path):
    result = run_yaml(write_yaml(tmp_path / "p.yaml", PRUNE_YAML), "tiny-sparse", tiny_cache)
    assert result.exit_code == 0, result.error
    m = result.steps[-1].artifact.metrics
    assert abs(m["sparsity"] - 0.6) < 0.01
    assert m["gzip_bytes"] < m["input_gzip_bytes"]
    model, _, _ = load_model(result.steps[-1].artifact.model_dir)
    assert abs(sp.measured_sparsity(sp.prunable_weights(model)) - 0.6) < 0.01  # masks are folded into the saved weights


def test_sliced_model_exports_to_onnx_and_matches(tmp_path):
    """Sliced layers with per-layer head counts export with the project's ONNX writer and run."""
    pytest.importorskip("onnxruntime")
    from edge_runtime import open_model
    from export.onnx import export_onnx

    model = _model(groups=2)
    h, n = st.magnitude_scores(model)
    st.apply_plan(model, st.Plan([[0, 1], [3]], st.select(n, 0.5, False)))  # 2 and 3 heads: non-uniform
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    batch = _batch()
    got = open_model(str(path), runtime="onnxruntime", threads=1)(
        batch["input_ids"].numpy(), batch["attention_mask"].numpy(), batch["token_type_ids"].numpy()
    )
    assert np.abs(got - _logits(model, batch).numpy()).max() < 1e-4


@pytest.mark.skipif(
    importlib.util.find_spec("neural_compressor") is None, reason="neural-compressor 2.x not installed (optional inc backend)"
)
def test_inc_backend_reaches_pattern_sparsity(tiny_teacher, tiny_cache, tmp_path):
    text = TINY_YAML + """\
  tiny-inc:
    extends: tiny
    append:
      - prune:
          method: unstructured
          backend: inc
          sparsity: 0.5
          inc: {pattern: "4x1", frequency: 2}
          recovery: {epochs: 1, batch_size: 32, lr: 1.0e-3}
"""
    result = run_yaml(write_yaml(tmp_path / "p.yaml", text), "tiny-inc", tiny_cache)
    assert result.exit_code == 0, result.error
    m = result.steps[-1].artifact.metrics
    assert m["sparsity"] > 0.4 and m["gzip_bytes"] < m["input_gzip_bytes"]
    model, _, _ = load_model(result.steps[-1].artifact.model_dir)
    w = model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight
    blocks = (w.reshape(w.shape[0] // 4, 4, -1) == 0).all(1)  # 4x1: four rows pruned together
    assert blocks.float().mean() > 0.3
