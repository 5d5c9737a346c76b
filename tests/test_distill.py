"""distill: student initialisation (layer selection, shared-group mean, SVD embeddings), the
distillation loss terms, validation, and the stage end to end through the runner."""

from __future__ import annotations

import pytest
import torch

from albert_edge.config import resolve_pipeline
from albert_edge.models import count_parameters, load_model
from albert_edge.schema import ConfigError
from compress.losses import DistillationLoss, DistillLossConfig, even_layer_map
from compress.student import InitConfig, StudentConfig, build_student, factorized_embedding_init, svd_factorize
from tests.conftest import TINY_YAML, run_yaml, write_yaml

torch.set_num_threads(1)


def _teacher(layers: int = 4, embedding: int = 32, seed: int = 0):
    """A random-but-not-initial ALBERT (perturbed so LayerNorms are not the identity)."""
    from transformers import AlbertConfig, AlbertForSequenceClassification

    from albert_edge.models import ALBERT_TINY

    torch.manual_seed(seed)
    cfg = AlbertConfig(
        num_labels=2,
        **{**ALBERT_TINY, "vocab_size": 500, "embedding_size": embedding, "num_hidden_layers": layers, "num_hidden_groups": layers},
    )
    model = AlbertForSequenceClassification(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _batch(n: int = 3, seq: int = 9, vocab: int = 500):
    torch.manual_seed(1)
    ids = torch.randint(5, vocab, (n, seq))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids), "labels": torch.tensor([0, 1, 1][:n])}


def _embed(model, batch):
    return model.albert.encoder.embedding_hidden_mapping_in(
        model.albert.embeddings(batch["input_ids"], token_type_ids=batch["token_type_ids"])
    )


def test_svd_full_rank_reproduces_table_and_truncation_is_optimal():
    torch.manual_seed(0)
    table = torch.randn(200, 24)
    a, b = svd_factorize(table, 24)
    assert a.shape == (200, 24) and b.shape == (24, 24)
    assert (a @ b - table).abs().max() < 1e-4
    a8, b8 = svd_factorize(table, 8)
    err8 = torch.linalg.norm(a8 @ b8 - table)
    s = torch.linalg.svdvals(table.double())
    assert abs(err8.item() - s[8:].norm().item()) < 1e-3  # Eckart-Young: the truncation error is the tail


@pytest.mark.parametrize("basis", ["word", "inputs"])
def test_factorised_embeddings_at_full_rank_reproduce_teacher_embedding_output(basis):
    teacher = _teacher()
    student, _ = build_student(teacher, StudentConfig(num_hidden_layers=2, embedding_size=32), InitConfig())
    kept = factorized_embedding_init(teacher, student, basis)  # force the SVD path at E = E_t
    assert kept > 0.999
    batch = _batch()
    with torch.no_grad():
        diff = (_embed(student, batch) - _embed(teacher, batch)).abs().max().item()
    assert diff < 1e-4, diff
    # the tables really were rotated (not just copied): the equality comes from the folding
    assert (student.albert.embeddings.word_embeddings.weight - teacher.albert.embeddings.word_embeddings.weight).abs().max() > 1e-2


def test_svd_truncated_embeddings_are_smaller_and_close_for_low_rank_tables():
    teacher = _teacher(embedding=32)
    with torch.no_grad():  # give the teacher a rank-12 (+ noise) word table, as trained tables nearly are
        w = teacher.albert.embeddings.word_embeddings.weight
        w.copy_(torch.randn(w.shape[0], 12) @ torch.randn(12, 32) * 0.3 + 0.001 * torch.randn_like(w))
    student, notes = build_student(teacher, StudentConfig(num_hidden_layers=2, embedding_size=16), InitConfig())
    assert any("SVD 32 -> 16" in n for n in notes)
    assert student.albert.embeddings.word_embeddings.weight.shape == (500, 16)
    batch = _batch()
    with torch.no_grad():
        t, s = _embed(teacher, batch), _embed(student, batch)
    rel = ((s - t).norm() / t.norm()).item()
    assert rel < 0.1, rel


def test_frequency_weighted_basis_fits_frequent_tokens_better():
    teacher = _teacher(embedding=32)
    counts = torch.zeros(500)
    counts[5:60] = 100.0  # the batch below uses only these tokens
    torch.manual_seed(2)
    ids = torch.randint(5, 60, (4, 9))
    batch = {"input_ids": ids, "token_type_ids": torch.zeros_like(ids)}
    errs = {}
    for how, c in (("word", None), ("inputs", counts)):
        student, _ = build_student(
            teacher, StudentConfig(num_hidden_layers=2, embedding_size=12), InitConfig(svd_basis=how), token_counts=c, positions=9
        )
        with torch.no_grad():
            t, s = _embed(teacher, batch), _embed(student, batch)
        errs[how] = ((s - t).norm() / t.norm()).item()
    assert errs["inputs"] < 0.8 * errs["word"], errs


def test_layer_selection_copies_teacher_layers():
    teacher = _teacher(layers=4)
    student, notes = build_student(teacher, StudentConfig(num_hidden_layers=2, embedding_size=32), InitConfig())
    assert even_layer_map(4, 2) == [1, 3]
    for j, t in enumerate([1, 3]):
        s_layer = student.albert.encoder.albert_layer_groups[j].albert_layers[0]
        t_layer = teacher.albert.encoder.albert_layer_groups[t].albert_layers[0]
        for (name, sp), tp in zip(s_layer.state_dict().items(), t_layer.state_dict().values()):
            assert torch.equal(sp, tp), name
    explicit, _ = build_student(teacher, StudentConfig(num_hidden_layers=2, embedding_size=32), InitConfig(layers=(0, 2)))
    assert torch.equal(explicit.albert.encoder.albert_layer_groups[1].albert_layers[0].ffn.weight,
                       teacher.albert.encoder.albert_layer_groups[2].albert_layers[0].ffn.weight)
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_shared_group_starts_from_mean_of_its_layers():
    teacher = _teacher(layers=4)
    student, notes = build_student(teacher, StudentConfig(num_hidden_layers=2, num_hidden_groups=1, embedding_size=32), InitConfig())
    assert len(student.albert.encoder.albert_layer_groups) == 1
    assert "mean" in notes[0]
    t = teacher.albert.encoder.albert_layer_groups
    expected = (t[1].albert_layers[0].attention.query.weight + t[3].albert_layers[0].attention.query.weight) / 2
    got = student.albert.encoder.albert_layer_groups[0].albert_layers[0].attention.query.weight
    assert (got - expected).abs().max() < 1e-6
    assert count_parameters(student) < count_parameters(teacher)


def test_incompatible_shapes_stay_random_and_say_so():
    teacher = _teacher(layers=4)
    student, notes = build_student(teacher, StudentConfig(num_hidden_layers=2, intermediate_size=64, embedding_size=32), InitConfig())
    assert any("random" in n and "intermediate_size" in n for n in notes)
    assert student.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight.shape == (64, 64)


@pytest.mark.parametrize("student_kwargs", [{"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}, {}])
def test_loss_terms_are_finite_and_reach_every_trainable_part(student_kwargs):
    teacher = _teacher(layers=4)
    student, _ = build_student(teacher, StudentConfig(num_hidden_layers=2, embedding_size=16, **student_kwargs), InitConfig())
    cfg = DistillLossConfig(alpha_ce=0.5, alpha_kd=0.5, temperature=2.0, hidden_mse=1.0, attention=1.0)
    loss_fn = DistillationLoss(cfg, teacher, student)
    assert (loss_fn.projection is not None) == bool(student_kwargs)
    student.train()
    with loss_fn.context(student):
        loss = loss_fn(student, _batch())
    loss.backward()
    assert torch.isfinite(loss)
    assert set(loss_fn.terms) == {"ce", "kd", "hidden", "attention"}
    assert all(v > 0 for v in loss_fn.terms.values()), loss_fn.terms
    for p in loss_fn.params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    q = student.albert.encoder.albert_layer_groups[0].albert_layers[0].attention.query.weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"  # restored


def test_identical_student_has_zero_distillation_terms():
    teacher = _teacher(layers=2)
    student, _ = build_student(teacher, StudentConfig(num_hidden_layers=2, embedding_size=32), InitConfig(layers=(0, 1)))
    student.eval()
    loss_fn = DistillationLoss(DistillLossConfig(alpha_ce=0.0, alpha_kd=1.0, hidden_mse=1.0, attention=1.0), teacher, student)
    with torch.no_grad(), loss_fn.context(student):
        loss_fn(student, _batch())
    assert all(v < 1e-6 for v in loss_fn.terms.values()), loss_fn.terms


DISTILL_YAML = TINY_YAML + """\
  tiny-distill:
    extends: tiny
    append:
      - distill:
          student: {num_hidden_layers: 1, embedding_size: 16, intermediate_size: 64}
          loss: {alpha_ce: 0.5, alpha_kd: 0.5, temperature: 2.0}
          train: {epochs: 2, batch_size: 32, lr: 3.0e-3}
"""


def test_distill_stage_runs_and_output_loads(tiny_teacher, tiny_cache, tmp_path):
    path = write_yaml(tmp_path / "p.yaml", DISTILL_YAML)
    result = run_yaml(path, "tiny-distill", tiny_cache)
    assert result.exit_code == 0, result.error
    assert result.steps[0].status == "reused"  # the shared tiny teacher
    art = result.steps[-1].artifact
    m = art.metrics
    assert art.kind == "model" and 0.0 <= m["accuracy"] <= 1.0
    assert m["params"] < m["teacher_params"] and m["teacher_forward_batches"] == 0  # cached teacher logits
    model, tok, meta = load_model(art.model_dir)
    assert model.config.num_hidden_layers == 1 and model.config.embedding_size == 16
    assert count_parameters(model) == m["params"]
    assert "agreement" in m and any("SVD" in n for n in art.info["init"])


def _validate(text: str, tmp_path):
    from albert_edge.config import load_yaml

    return resolve_pipeline(load_yaml(write_yaml(tmp_path / "v.yaml", text)), "v")


def test_validation_rejects_more_student_layers_than_teacher(tmp_path):
    base = """\
    version: 1
    pipelines:
      v:
        model: "config:tiny"
        stages:
          - finetune: {id: teacher}
          - distill: {student: %s}
    """
    with pytest.raises(ConfigError) as err:
        _validate(base % "{num_hidden_layers: 3}", tmp_path)
    assert "student.num_hidden_layers" in str(err.value) and "hint" in str(err.value)
    with pytest.raises(ConfigError, match="num_hidden_groups"):
        _validate(base % "{num_hidden_layers: 2, num_hidden_groups: 3}", tmp_path)
    with pytest.raises(ConfigError, match="embedding_size"):
        _validate(base % "{num_hidden_layers: 2, embedding_size: 1}", tmp_path)
    assert _validate(base % "{num_hidden_layers: 2, embedding_size: 16}", tmp_path).steps[1].config.student.num_hidden_layers == 2
