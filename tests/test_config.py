"""pipelines.yaml validation: each bad config fails before any work, naming the YAML path."""

from __future__ import annotations

import pytest

from albert_edge.config import load_pipeline, validate_file
from albert_edge.schema import ConfigError
from tests.conftest import write_yaml

BASE = """\
version: 1
defaults:
  seed: 1
  task: {{name: sst2, max_train_rows: 50, max_eval_rows: 20}}
pipelines:
  p:
    model: "{model}"
{extra}    stages:
{stages}
"""


def make(tmp_path, stages="      - finetune: {train: {epochs: 1}}\n", model="config:tiny", extra=""):
    return write_yaml(tmp_path / "p.yaml", BASE.format(model=model, extra=extra, stages=stages))


def error_of(path, pipeline="p") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, pipeline)
    return info.value


def test_valid_pipeline_loads(tmp_path):
    pipe = load_pipeline(make(tmp_path), "p")
    assert [s.id for s in pipe.steps] == ["finetune"]
    assert pipe.steps[0].config.train.epochs == 1.0
    assert pipe.random_weights is True


@pytest.mark.parametrize(
    "stages, extra, model, path, words",
    [
        # 1. unknown stage, with a suggestion
        ("      - finetun: {}\n", "", "config:tiny", "pipelines.p.stages[0].finetun", "did you mean 'finetune'"),
        # 2. wrong type
        (
            "      - finetune: {train: {epochs: many}}\n",
            "",
            "config:tiny",
            "pipelines.p.stages[0].finetune.train.epochs",
            "expected a number",
        ),
        # 3. unknown parameter
        (
            "      - finetune: {train: {epoch: 1}}\n",
            "",
            "config:tiny",
            "pipelines.p.stages[0].finetune.train.epoch",
            "did you mean 'epochs'",
        ),
        # 4. impossible value
        ("      - finetune: {train: {lr: 3}}\n", "", "config:tiny", "pipelines.p.stages[0].finetune.train.lr", "should be in (0, 1)"),
        # 5. missing data file
        ("      - evaluate\n", "    task: {data_dir: /nonexistent/sst2}\n", "config:tiny", "pipelines.p.task", "does not exist"),
        # 6. bad model source
        ("      - evaluate\n", "", "onnx:foo", "pipelines.p.model", "not a model source"),
        # 7. unknown packaged model
        ("      - evaluate\n", "", "packaged:gpt5", "pipelines.p.model", "unknown packaged model"),
        # 8. missing local model directory
        ("      - evaluate\n", "", "hf:./no/such/dir", "pipelines.p.model", "does not exist"),
        # 9. budget out of range
        (
            "      - evaluate\n",
            "    budget: {max_accuracy_drop: -1}\n",
            "config:tiny",
            "pipelines.p.budget.max_accuracy_drop",
            "between 0 and 100",
        ),
        # 10. duplicate step id
        ("      - finetune: {}\n      - finetune: {}\n", "", "config:tiny", "pipelines.p.stages[1].finetune.id", "duplicate step id"),
        # 11. input referring to a later / unknown step
        (
            "      - evaluate: {inputs: {model: later}}\n      - finetune: {id: later}\n",
            "",
            "config:tiny",
            "pipelines.p.stages[0].evaluate.inputs.model",
            "not an earlier step",
        ),
        # 12. unknown pipeline key
        ("      - evaluate\n", "    bugdet: {}\n", "config:tiny", "pipelines.p.bugdet", "did you mean 'budget'"),
        # 13. task value out of range
        ("      - evaluate\n", "    task: {max_seq_len: 4}\n", "config:tiny", "pipelines.p.task.max_seq_len", "outside 8..4096"),
        # 14. literal choice
        ("      - evaluate\n", "    task: {on_bad_row: ignore}\n", "config:tiny", "pipelines.p.task.on_bad_row", "not allowed"),
        # 15. no stages
        ("", "", "config:tiny", "pipelines.p.stages", "at least one stage"),
        # 16. impossible sparsity
        ("      - prune: {method: unstructured, sparsity: 1.5}\n", "", "config:tiny", "pipelines.p.stages[0].prune.sparsity", "1.5"),
        # 17. more student layers than the teacher has
        (
            "      - distill: {student: {num_hidden_layers: 8}}\n",
            "",
            "packaged:minilm-l6",
            "pipelines.p.stages[0].distill.student.num_hidden_layers",
            "6",
        ),
    ],
)
def test_bad_configs_name_the_path(tmp_path, stages, extra, model, path, words):
    err = error_of(make(tmp_path, stages=stages, extra=extra, model=model))
    assert err.path == path, str(err)
    assert words in str(err), str(err)


def test_extends_set_and_drop(tmp_path):
    p = write_yaml(tmp_path / "p.yaml", """\
        pipelines:
          base:
            model: "config:tiny"
            task: {max_train_rows: 50}
            stages:
              - finetune: {train: {epochs: 2, lr: 1.0e-3}}
              - evaluate
          child:
            extends: base
            seed: 9
            set: {finetune: {train: {epochs: 1}}}
            drop: [evaluate]
        """)
    child = load_pipeline(p, "child")
    assert child.seed == 9
    assert [s.id for s in child.steps] == ["finetune"]
    assert child.steps[0].config.train.epochs == 1.0
    assert child.steps[0].config.train.lr == 1e-3  # inherited, not copied
    assert child.task.max_train_rows == 50


def test_extends_cycle_and_unknown(tmp_path):
    p = write_yaml(tmp_path / "p.yaml", """\
        pipelines:
          a: {extends: b, model: "config:tiny", stages: [evaluate]}
          b: {extends: a, model: "config:tiny", stages: [evaluate]}
        """)
    with pytest.raises(ConfigError, match="cycle"):
        load_pipeline(p, "a")
    with pytest.raises(ConfigError, match="no such pipeline"):
        load_pipeline(p, "c")


def test_invalid_yaml_reports_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("pipelines:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        validate_file(p)


def test_repo_pipelines_file_is_valid():
    from albert_edge.paths import REPO_ROOT

    names = [p.name for p in validate_file(REPO_ROOT / "pipelines.yaml")]
    assert "smoke" in names and "sst2-mobile" in names


def test_config_round_trips_to_json(tmp_path):
    import json

    from albert_edge.schema import build, to_dict

    pipe = load_pipeline(make(tmp_path), "p")
    cfg = pipe.steps[0].config
    again = build(type(cfg), json.loads(json.dumps(to_dict(cfg))), "x")
    assert again == cfg
