"""The stage contract: what a stage function receives, what it may raise, what it writes.

Stages import this module, never the runner: the runner imports it too, so both sides read
one definition and the import graph stays a tree (runner -> registry -> stage -> contract).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

if TYPE_CHECKING:
    from albert_edge.artifacts import Artifact
    from albert_edge.budget import Budget
    from albert_edge.config import Pipeline, Step

# What a stage writes; later steps ask for an input by its kind (`inputs=("onnx", ...)`).
ArtifactKind = Literal["model", "eval", "onnx", "tflite", "quantized", "bundle", "bench", "report"]
ARTIFACT_KINDS: tuple[str, ...] = ("model", "eval", "onnx", "tflite", "quantized", "bundle", "bench", "report")

C = TypeVar("C")


class StageFailed(RuntimeError):
    """A stage raised; the message says which and why. Earlier artifacts are kept (exit 1)."""


class GateFailed(RuntimeError):
    """A stage's output broke the pipeline's accuracy budget (exit 1)."""


class StageError(RuntimeError):
    """An expected failure inside a stage (a parity miss, an empty result): message only, no traceback."""


class StageInputError(StageFailed):
    """Bad input met inside a stage (a data file, a parameter this model cannot take): the
    user's to fix, so the run exits 2 like a config error. data.DataError is treated the same."""


@dataclass
class StageContext(Generic[C]):
    """Everything a stage function may use. It writes files into `out_dir` only."""

    step: Step
    config: C
    pipeline: Pipeline
    inputs: dict[str, Any]  # role -> Artifact (or list of Artifacts for "*"); None if optional and absent
    out_dir: Path
    log: logging.Logger
    info: dict[str, Any] = field(default_factory=dict)  # extra manifest content (variants, fallbacks...)

    @property
    def teacher(self) -> Artifact | None:
        return self.inputs.get("teacher")

    @property
    def teacher_accuracy(self) -> float | None:
        t = self.teacher
        return None if t is None else t.metrics.get("accuracy")

    @property
    def budget(self) -> Budget:
        return self.pipeline.budget

    def progress(self, iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
        """A tqdm bar on a terminal; silent (disabled) when stderr is not one."""
        from tqdm.auto import tqdm

        kwargs.setdefault("desc", self.step.id)
        kwargs.setdefault("leave", False)
        kwargs.setdefault("dynamic_ncols", True)
        kwargs.setdefault("disable", None if sys.stderr.isatty() else True)
        return tqdm(iterable, **kwargs)


# A registered stage: takes its context, returns the metrics recorded in the manifest.
StageFn = Callable[[StageContext[Any]], dict[str, Any]]
