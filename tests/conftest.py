"""Shared fixtures: a tiny ALBERT trained on a few hundred SST-2 rows, built once per session
through the real runner, so every stage test starts from a real model artifact."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TINY_YAML = """\
version: 1
defaults:
  seed: 7
  threads: 1
  task: {name: sst2, max_train_rows: 400, max_eval_rows: 120, max_seq_len: 64}
  budget: {max_accuracy_drop: 100.0, min_agreement: 0.0}  # a near-chance model: tests that need a binding gate set their own
pipelines:
  tiny:
    model: "config:tiny"
    stages:
      - finetune: {id: teacher, train: {epochs: 3, batch_size: 32, lr: 3.0e-3, evals_per_epoch: 1}}
"""


def cpu_isa() -> str:
    """The int8-relevant ISA features the CPU reports (CPUID, so qemu's CPU model shows)."""
    import platform

    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as feats
    names = ("SSE41", "AVX", "AVX2", "FMA3", "AVX512F", "AVX512BW", "AVX512VNNI", "AVX512_VNNI", "AVXVNNI", "ASIMD", "ASIMDDP", "I8MM")
    return f"{platform.machine()} " + (" ".join(n.lower() for n in names if feats.get(n)) or "baseline")


def pytest_report_header(config) -> str:
    """Say which CPU (and int8 kernel path) the run used, qemu's model when emulated."""
    emulated = os.environ.get("ALBERT_EDGE_QEMU_CPU")
    return f"cpu isa: {cpu_isa()}" + (f" (qemu-x86_64 -cpu {emulated.split(',')[0]})" if emulated else "")


# Two tiny fine-tunes, the second (`slow`) long enough to kill or wait on; SLOW is its epochs.
TWO_STEP_TEMPLATE = """\
defaults:
  seed: 3
  threads: 1
  task: {name: sst2, max_train_rows: 160, max_eval_rows: 40, max_seq_len: 48}
pipelines:
  two:
    model: "config:tiny"
    stages:
      - finetune: {id: teacher, train: {epochs: 1, lr: 1.0e-3}}
      - finetune: {id: slow, start_from: previous, train: {epochs: SLOW, lr: 1.0e-4, evals_per_epoch: 2}}
"""


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def run_yaml(path: Path, pipeline: str, cache: Path, **kwargs):
    """Run a pipeline from a YAML file through the real runner; returns the RunResult."""
    from albert_edge.config import load_pipeline
    from albert_edge.runner import run_pipeline

    return run_pipeline(load_pipeline(path, pipeline), cache, **kwargs)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_yaml(tmp_path_factory) -> Path:
    return write_yaml(tmp_path_factory.mktemp("yaml") / "pipelines.yaml", TINY_YAML)


@pytest.fixture(scope="session")
def tiny_teacher(tiny_yaml, tiny_cache):
    """A trained tiny ALBERT model artifact (kind 'model')."""
    result = run_yaml(tiny_yaml, "tiny", tiny_cache)
    assert result.exit_code == 0, result.error
    return result.steps[-1].artifact
