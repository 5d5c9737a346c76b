"""The pipeline's `threads` reaches every stage that sets threads, the benchmark included."""

from __future__ import annotations

from albert_edge.config import load_pipeline
from tests.conftest import write_yaml

YAML = """\
version: 1
defaults:
  threads: 3
  task: {{name: sst2, max_train_rows: 50, max_eval_rows: 20}}
pipelines:
  p:
    model: "config:tiny"
    stages:
      - finetune: {{train: {{epochs: 1}}}}
      - export_onnx
      - bundle
      - benchmark: {bench}
"""


def test_benchmark_threads_default_to_the_pipelines(tmp_path):
    pipe = load_pipeline(write_yaml(tmp_path / "p.yaml", YAML.format(bench="{runs: 5}")), "p")
    assert pipe.threads == 3 and pipe.steps[-1].config.threads == (3,)


def test_benchmark_threads_set_in_the_step_win(tmp_path):
    pipe = load_pipeline(write_yaml(tmp_path / "p.yaml", YAML.format(bench="{threads: [1, 2]}")), "p")
    assert pipe.steps[-1].config.threads == (1, 2)
