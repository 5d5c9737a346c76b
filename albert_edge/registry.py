"""Stage registry: one YAML key -> one module -> one registered function with a frozen config.

Modules are imported lazily so `albert-edge validate` does not pay for TensorFlow or ONNX
Runtime imports of stages the pipeline never uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from albert_edge.contract import ARTIFACT_KINDS, ArtifactKind, StageFn

# YAML key -> module that registers it. The single place a new stage is announced.
STAGE_MODULES: dict[str, str] = {
    "finetune": "albert_edge.stages.finetune",
    "evaluate": "albert_edge.stages.evaluate",
    "distill": "albert_edge.stages.distill",
    "prune": "albert_edge.stages.prune",
    "quantize": "albert_edge.stages.quantize",
    "export_onnx": "albert_edge.stages.export_onnx",
    "export_tflite": "albert_edge.stages.export_tflite",
    "bundle": "albert_edge.stages.bundle",
    "benchmark": "albert_edge.stages.benchmark",
    "report": "albert_edge.stages.report",
}


@dataclass(frozen=True)
class StageSpec:
    """What the runner needs to know about a stage."""

    name: str
    fn: StageFn
    config_cls: type
    version: str
    inputs: tuple[str, ...]
    output_kind: ArtifactKind
    gated: bool
    uses_budget: bool
    doc: str


_REGISTRY: dict[str, StageSpec] = {}


def stage(
    name: str,
    *,
    config: type,
    version: str,
    inputs: tuple[str, ...] = ("model",),
    output: ArtifactKind = "model",
    gated: bool = False,
    uses_budget: bool = False,
) -> Callable[[StageFn], StageFn]:
    """Register `fn` as the stage `name`.

    inputs: roles the runner resolves from earlier artifacts (`model`, `teacher`, `onnx`,
    `tflite`, `eval`, `bundle`, `bench`, or `*`: every earlier artifact).
    output: the kind of artifact the stage writes.
    version: bump when the stage's code changes what it writes; it is part of the cache key.
    gated: the budget gate applies to the stage's `accuracy` metric.
    uses_budget: the stage's output depends on the budget (accuracy-aware fallback), so the
    budget is part of its cache key; the gate alone never invalidates an artifact.
    """

    if output not in ARTIFACT_KINDS:
        raise ValueError(f"stage {name}: unknown output kind {output!r}; one of {', '.join(ARTIFACT_KINDS)}")

    def register(fn: StageFn) -> StageFn:
        _REGISTRY[name] = StageSpec(
            name=name,
            fn=fn,
            config_cls=config,
            version=version,
            inputs=inputs,
            output_kind=output,
            gated=gated,
            uses_budget=uses_budget,
            doc=(fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else "",
        )
        return fn

    return register


def get_stage(name: str) -> StageSpec:
    """Import the stage's module (once) and return its spec; KeyError for unknown names."""
    if name not in STAGE_MODULES:
        raise KeyError(name)
    if name not in _REGISTRY:
        importlib.import_module(STAGE_MODULES[name])
    return _REGISTRY[name]

