"""Model sources: exact MiniLM -> ALBERT conversion, ALBERT configs with the real tokenizer."""

from __future__ import annotations

import pytest
import torch

from albert_edge import models


def test_minilm_to_albert_is_exact():
    from transformers import BertModel

    albert, tok, info = models.load_source("packaged:minilm-l6")
    assert info["random_weights"] is False
    bert = BertModel.from_pretrained(str(models.minilm_dir()))
    albert.eval()
    bert.eval()
    cfg = albert.config
    assert (cfg.embedding_size, cfg.hidden_size, cfg.num_hidden_groups, cfg.num_hidden_layers) == (384, 384, 6, 6)
    enc = tok(["a gripping , funny and heartfelt film .", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        a = albert.albert(**enc)
        b = bert(**enc)
    assert (a.last_hidden_state - b.last_hidden_state).abs().max().item() < 1e-5
    assert (a.pooler_output - b.pooler_output).abs().max().item() < 1e-5


def test_albert_base_v2_config_shape_and_tokenizer():
    info = models.describe_source("config:albert-base-v2")
    assert info["random_weights"] is True and info["num_hidden_layers"] == 12
    tok = models.albert_tokenizer()
    assert tok("Hello world")["input_ids"] == [2, 10975, 126, 3]


def test_inline_and_file_configs(tmp_path):
    m, tok, info = models.load_source('config:{"base": "tiny", "num_hidden_layers": 3, "num_hidden_groups": 1}')
    assert m.config.num_hidden_layers == 3 and m.config.hidden_size == 64 and info["random_weights"]
    p = tmp_path / "c.json"
    p.write_text('{"base": "tiny", "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}')
    assert models.describe_source(f"config:{p}")["hidden_size"] == 32


def test_bad_sources_explain_themselves():
    from albert_edge.schema import FieldError

    for source, words in [("nope", "not a model source"), ("config:{bad", "not JSON"), ("config:missing.json", "neither a known name")]:
        with pytest.raises(FieldError, match=words):
            models.describe_source(source)


@pytest.mark.kernels
def test_save_and_load_round_trip(tmp_path):
    m, tok, _ = models.load_source("config:tiny")
    models.save_model(m, tok, tmp_path / "m", {"note": "x"})
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert not list((tmp_path / "m").glob("*.bin"))
    m2, tok2, meta = models.load_model(tmp_path / "m")
    # The round trip itself is exact: every tensor comes back bit for bit.
    before, after = m.state_dict(), m2.state_dict()
    assert before.keys() == after.keys()
    for name, t in before.items():
        assert after[name].dtype == t.dtype and torch.equal(after[name], t), name
    # Logits only to 1e-6: the loaded tensors are views into one mmap'd safetensors buffer,
    # not 64-byte aligned like fresh allocations, and CPU GEMM kernels block unaligned
    # operands differently, so the same weights may sum in another order (last-bit changes).
    ids = torch.tensor([tok("a test")["input_ids"]])
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(m2(input_ids=ids).logits, m(input_ids=ids).logits, rtol=0.0, atol=1e-6)
    assert meta == {"note": "x"}
