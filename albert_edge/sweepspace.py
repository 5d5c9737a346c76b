"""The search space file of `albert-edge sweep`: validated, frozen, before any work starts.

File layout::

    version: 1
    sweep:
      name: smoke-shapes              # results go to sweeps/<name>/ (default: <pipeline>-<file stem>)
      strategy: grid                  # grid | random | nsga2 (Optuna's NSGA-II through Ray Tune's OptunaSearch) | points
      trials: 8                       # random, nsga2: how many trials (grid: every combination)
      params:                         # <step id>.<config path>: [values]; also task.*, budget.*, seed
        distill.student.num_hidden_layers: [2, 3, 4]
        prune.heads: [4, 6, 8]
      fixed: {task.max_train_rows: 4000}   # set for every trial and the hand-tuned baseline (a proxy budget)
      objectives: [val_accuracy, p50_ms, size_mb]
      measure: {device: local, files: [tflite-int8-dynamic, onnx-int8-dynamic]}
      constraints: {max_accuracy_drop: 1.0, max_p50_ms: 5, max_size_mb: 8}
      resources: {cpus_per_trial: 1, max_concurrent: 2, max_failures: 2}

Every parameter path must exist in the pipeline (a step id, then keys of that step's config as
resolved, defaults included); a missing one is an error naming it, and every value is checked
by building the pipeline with it, so a bad value fails here and not in trial 17.
"""

from __future__ import annotations

import copy
import itertools
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from albert_edge.config import MAX_YAML_BYTES, Pipeline, _BoundedLoader, _YamlLimit, line_of, resolve_pipeline, stable_hash
from albert_edge.pareto import OBJECTIVES
from albert_edge.schema import ConfigError, build, require, safe_name, short_repr, to_dict

Strategy = Literal["grid", "random", "nsga2", "points"]
Objective = Literal["val_accuracy", "p50_ms", "size_mb", "rss_peak_mb"]
TOP_LEVEL = ("task", "budget", "seed")  # pipeline settings a path may address besides step ids
BASELINE = "baseline"


@dataclass(frozen=True)
class MeasureConfig:
    """Where and how each trial's shipped file is timed (benchmarks.harness, one fresh process)."""

    device: str = "local"
    files: tuple[str, ...] = ("tflite-int8-dynamic", "onnx-int8-dynamic")  # the first one the bundle holds is measured
    runtime: str | None = None  # default: onnxruntime for .onnx, litert for .tflite
    threads: int = 2
    runs: int = 30
    min_secs: float = 0.5
    warmup: int = 1
    warmup_min_secs: float = 0.2
    timeout_s: float = 600.0

    def check(self) -> None:
        from benchmarks.devices.base import parse_spec

        try:
            parse_spec(self.device)
        except ValueError as err:
            require(False, "device", str(err))
        require(len(self.files) > 0, "files", "name at least one bundle file (variant), e.g. [onnx-int8-dynamic]")
        require(
            self.runtime in (None, "onnxruntime", "litert", "tflite-runtime"),
            "runtime",
            f"{self.runtime!r}",
            "onnxruntime, litert or tflite-runtime",
        )
        require(self.threads >= 1, "threads", "at least 1")
        require(self.runs >= 1, "runs", "at least 1 timed run")
        require(self.min_secs >= 0 and self.warmup_min_secs >= 0 and self.warmup >= 0, "min_secs", "times and counts cannot be negative")
        require(0 < self.timeout_s <= 86400, "timeout_s", "over 0 and at most 86400 seconds")


@dataclass(frozen=True)
class Constraints:
    """What `--pick` requires of a trial (all optional)."""

    max_accuracy_drop: float | None = None  # points of validation accuracy below the teacher's
    max_p50_ms: float | None = None
    max_size_mb: float | None = None
    max_rss_mb: float | None = None

    def check(self) -> None:
        for k, v in to_dict(self).items():
            require(v is None or v >= 0, k, f"{v}: a limit cannot be negative")


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0  # Ray CPUs per trial; the trial's torch threads follow it (at least 1)
    max_concurrent: int = 2  # trials building side by side
    max_failures: int = 2  # Ray retries of a trial whose worker died (FailureConfig)

    def check(self) -> None:
        require(self.cpus_per_trial > 0, "cpus_per_trial", "must be over 0")
        require(self.max_concurrent >= 1, "max_concurrent", "at least 1")
        require(self.max_failures >= 0, "max_failures", "cannot be negative")


@dataclass(frozen=True)
class SweepSpec:
    params: dict[str, Any]
    name: str = ""
    strategy: Strategy = "grid"
    trials: int | None = None
    seed: int = 0
    population: int = 8  # nsga2: individuals per generation
    points: tuple[dict[str, Any], ...] = ()  # points: the recipes to run, each a value of every param (e.g. a proxy front to re-train)
    fixed: dict[str, Any] = field(default_factory=dict)
    until: str = "bundle"  # the last step a trial builds; measurement follows
    baseline: bool = True  # also build and measure the pipeline as written (the hand-tuned recipe)
    objectives: tuple[Objective, ...] = ("val_accuracy", "p50_ms", "size_mb")
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    constraints: Constraints = field(default_factory=Constraints)
    resources: Resources = field(default_factory=Resources)

    def check(self) -> None:
        require(bool(self.params), "params", "no parameters to search", "params: {distill.student.num_hidden_layers: [2, 3]}")
        for path, values in self.params.items():
            require(isinstance(path, str) and bool(path), f"params.{path}", "a parameter path is a string like step.key")
            require(
                isinstance(values, list) and len(values) > 0,
                f"params.{path}",
                f"expected a non-empty list of values, got {short_repr(values)}",
            )
            require(len({stable_hash(v) for v in values}) == len(values), f"params.{path}", "values repeat")
        require(self.trials is None or self.trials >= 1, "trials", "at least 1")
        require(self.strategy != "points" or bool(self.points), "points", "strategy points lists its recipes",
                "points: [{distill.student.num_hidden_layers: 3, prune.heads: 4}]")
        require(self.strategy == "points" or not self.points, "points",
                f"only strategy points reads `points` (strategy is {self.strategy})")
        for i, point in enumerate(self.points):
            require(isinstance(point, dict) and set(point) == set(self.params), f"points[{i}]",
                    f"set every param once: {', '.join(self.params)}")
            for path, value in point.items():
                require(any(stable_hash(v) == stable_hash(value) for v in self.params[path]), f"points[{i}].{path}",
                        f"{short_repr(value)} is not one of params.{path}")
        require(self.strategy in ("grid", "points") or self.trials is not None, "trials", f"strategy {self.strategy} needs `trials`",
                "trials: 20")
        require(self.population >= 2, "population", "NSGA-II needs at least 2 individuals per generation")
        require(len(set(self.objectives)) == len(self.objectives) and len(self.objectives) >= 1, "objectives", "name each objective once")
        require("val_accuracy" in self.objectives, "objectives", "val_accuracy must be an objective (dev accuracy is reported only)")
        if self.name:
            try:
                safe_name(self.name, "sweep name")
            except ValueError as err:
                require(False, "name", str(err))

    def combinations(self) -> list[dict[str, Any]]:
        keys = list(self.params)
        return [dict(zip(keys, vals)) for vals in itertools.product(*(self.params[k] for k in keys))]

    def planned(self) -> list[dict[str, Any]]:
        """The trials of grid and random, in a fixed order (a rerun plans the same list)."""
        if self.strategy == "points":
            return [{k: point[k] for k in self.params} for point in self.points]
        combos = self.combinations()
        if self.strategy == "grid":
            return combos
        n = min(self.trials or len(combos), len(combos))
        return random.Random(self.seed).sample(combos, n)


def trial_key(values: dict[str, Any]) -> str:
    """A trial's id: the hash of the values it sets (the same recipe is the same trial)."""
    return stable_hash(values)[:12]


def load_space(path: str | Path) -> tuple[SweepSpec, dict[str, Any]]:
    """Read and validate a space file; ConfigError (with file:line) when it is wrong."""
    p = Path(path)
    file = str(path)
    if not p.is_file():
        raise ConfigError(file, "file not found", "pass the path of a sweep space YAML file")
    raw = p.read_bytes()
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(file, f"larger than {MAX_YAML_BYTES >> 10} KiB")
    try:
        data = yaml.load(raw.decode("utf-8-sig"), Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlLimit as err:
        raise ConfigError(f"{file}:{err.line}", err.message, err.hint) from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(file, f"not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("sweep"), dict):
        raise ConfigError(file, "missing `sweep:` mapping", "the file needs `sweep: {params: {...}}`")
    for key in data:
        if key not in ("version", "sweep"):
            raise ConfigError(str(key), "unknown top-level key", "top-level keys: version, sweep", file=file, line=line_of(data, str(key)))
    if data.get("version", 1) != 1:
        raise ConfigError(
            "version", f"{data['version']!r} is not a supported version", "supported: 1", file=file, line=line_of(data, "version")
        )
    try:
        spec = build(SweepSpec, data["sweep"], "sweep")
    except ConfigError as err:
        err.file, err.line = file, line_of(data, err.path)
        raise
    return spec, data


def _nested(path: str, value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path.split(".")):
        out = {part: out}
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else copy.deepcopy(v)
    return out


def check_paths(spec: SweepSpec, pipeline: Pipeline, where: str = "sweep") -> None:
    """Every parameter path names a step (or task/budget/seed) and a key its config has."""
    ids = [s.id for s in pipeline.steps]
    for section, paths in (("params", spec.params), ("fixed", spec.fixed)):
        for path in paths:
            ypath = f"{where}.{section}.{path}"
            head, _, rest = path.partition(".")
            if head in ids:
                node: Any = pipeline.step(head).config_dict()
            elif head in ("task", "budget"):
                node = to_dict(getattr(pipeline, head))
            elif head == "seed" and not rest:
                continue
            else:
                raise ConfigError(ypath, f"{head!r} is not a step id of pipeline {pipeline.name}",
                                  f"steps: {', '.join(ids)} (or task.*, budget.*, seed)")
            if not rest:
                raise ConfigError(ypath, f"name a parameter of step {head!r}, e.g. {head}.{next(iter(node), 'key')}")
            done = head
            for part in rest.split("."):
                if not isinstance(node, dict) or part not in node:
                    known = ", ".join(node) if isinstance(node, dict) else "none (not a mapping)"
                    raise ConfigError(ypath, f"no parameter {part!r} under {done} in pipeline {pipeline.name}", f"keys there: {known}")
                node, done = node[part], f"{done}.{part}"
    if spec.until not in ids:
        raise ConfigError(f"{where}.until", f"no step {spec.until!r} in {pipeline.name}", f"steps: {', '.join(ids)}")
    if "bundle" not in [s.stage for s in pipeline.steps[: ids.index(spec.until) + 1]]:
        raise ConfigError(f"{where}.until", f"the trials must build a bundle: no bundle step up to {spec.until!r}", "until: bundle")


def trial_pipeline(data: dict[str, Any], name: str, values: dict[str, Any], source_file: str = "") -> Pipeline:
    """The pipeline `name` with `values` ({path: value}) applied, validated like any pipeline.
    The pipeline keeps its name: cache keys depend on configs, not on names."""
    data = copy.deepcopy(data)
    pipes = data["pipelines"]
    base = f"{name}--sweep-base"
    pipes[base] = pipes[name]
    over: dict[str, Any] = {"extends": base}
    steps: dict[str, Any] = {}
    for path, value in values.items():
        head, _, rest = path.partition(".")
        if head in TOP_LEVEL:
            over = _merge(over, _nested(path, value))
        else:
            steps = _merge(steps, _nested(path, value))
    if steps:
        over["set"] = steps
    pipes[name] = over
    return replace(resolve_pipeline(data, name, source_file), source_file=source_file)


def check_values(spec: SweepSpec, data: dict[str, Any], name: str, source_file: str = "") -> None:
    """Build the pipeline with each value alone (the fixed values and the others as written), so a
    value that can never work is an error naming it before any trial runs."""
    try:
        trial_pipeline(data, name, dict(spec.fixed), source_file)
    except ConfigError as err:
        raise ConfigError("sweep.fixed", f"gives an invalid pipeline: {err.path}: {err.message}", err.hint) from None
    for path, values in spec.params.items():
        for i, v in enumerate(values):
            try:
                trial_pipeline(data, name, {**spec.fixed, path: v}, source_file)
            except ConfigError as err:
                raise ConfigError(f"sweep.params.{path}[{i}]", f"{short_repr(v)} gives an invalid pipeline: {err.path}: {err.message}",
                                  err.hint) from None


def objective_modes(spec: SweepSpec) -> list[str]:
    return [OBJECTIVES[o] for o in spec.objectives]
