"""pipelines.yaml -> validated, frozen pipeline configs, before any work starts.

File layout::

    defaults:            # merged under every pipeline
      seed: 42
      task: {name: sst2}
    pipelines:
      smoke:
        model: "config:tiny"
        stages:
          - finetune: {epochs: 1}
          - evaluate
      smoke-fast:
        extends: smoke                    # derive without copying
        set: {finetune: {epochs: 0.5}}    # override step params by step id
        drop: [evaluate]                  # remove steps by id

A step is `stage_name` or `{stage_name: {params}}`; params may carry `id` (default: the stage
name) and `inputs` (role -> earlier step id).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from albert_edge import models
from albert_edge.budget import Budget
from albert_edge.data import TaskConfig
from albert_edge.registry import STAGE_MODULES, get_stage
from albert_edge.schema import ConfigError, FieldError, build, to_dict

PIPELINE_KEYS = {
    "description", "model", "task", "seed", "threads", "budget", "teacher", "stages",
    "extends", "set", "drop", "append",
}


@dataclass(frozen=True)
class Step:
    id: str
    stage: str
    config: Any
    inputs: dict[str, str]
    path: str  # YAML path, for messages

    def config_dict(self) -> dict[str, Any]:
        return to_dict(self.config)


@dataclass(frozen=True)
class Pipeline:
    name: str
    description: str
    model: str
    task: TaskConfig
    seed: int
    threads: int
    budget: Budget
    teacher: str | None
    steps: tuple[Step, ...]
    source_file: str = ""
    random_weights: bool = field(default=False)

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def settings_dict(self) -> dict[str, Any]:
        """What every stage's cache key depends on besides its own config."""
        return {
            "model": self.model,
            "task": to_dict(self.task),
            "seed": self.seed,
            "budget": to_dict(self.budget),
        }


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _deep_merge(base.get(k), v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def load_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(path), "file not found", "pass the path of a pipelines.yaml")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(where, f"not valid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(data, dict) or not isinstance(data.get("pipelines"), dict):
        raise ConfigError("pipelines", "missing or not a mapping", "the file needs `pipelines: {name: {...}}`")
    for key in data:
        if key not in ("defaults", "pipelines", "version"):
            raise ConfigError(key, "unknown top-level key", "top-level keys: version, defaults, pipelines")
    return data


def _step_id(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        if isinstance(params, dict) and "id" in params:
            return str(params["id"])
        return str(name)
    return None


def _resolve_raw(data: dict[str, Any], name: str, chain: tuple[str, ...] = ()) -> dict[str, Any]:
    """The pipeline's raw mapping with `extends`, `set`, `drop` and `append` applied."""
    pipes = data["pipelines"]
    path = f"pipelines.{name}"
    if name not in pipes:
        close = difflib.get_close_matches(name, list(pipes), n=1)
        raise ConfigError(path, "no such pipeline", f"did you mean {close[0]!r}?" if close else f"pipelines: {', '.join(pipes)}")
    if name in chain:
        raise ConfigError(path + ".extends", f"cycle: {' -> '.join(chain + (name,))}")
    raw = pipes[name]
    if not isinstance(raw, dict):
        raise ConfigError(path, "expected a mapping")
    for key in raw:
        if key not in PIPELINE_KEYS:
            close = difflib.get_close_matches(str(key), sorted(PIPELINE_KEYS), n=1)
            raise ConfigError(f"{path}.{key}", "unknown key", f"did you mean {close[0]!r}?" if close else "")
    if "extends" in raw:
        parent_name = raw["extends"]
        if not isinstance(parent_name, str) or parent_name not in pipes:
            raise ConfigError(path + ".extends", f"{parent_name!r} is not a pipeline in this file")
        merged = _resolve_raw(data, parent_name, chain + (name,))
        own = {k: v for k, v in raw.items() if k not in ("extends", "set", "drop", "append", "description")}
        merged = _deep_merge(merged, own)
        merged["description"] = raw.get("description", merged.get("description", ""))
    else:
        merged = copy.deepcopy({k: v for k, v in raw.items() if k not in ("set", "drop", "append")})
    stages = list(merged.get("stages") or [])
    ids = [_step_id(s) for s in stages]
    for sid, params in (raw.get("set") or {}).items():
        if sid not in ids:
            raise ConfigError(f"{path}.set.{sid}", "no step with this id", f"steps: {', '.join(str(i) for i in ids)}")
        i = ids.index(sid)
        entry = stages[i]
        stage_name = entry if isinstance(entry, str) else next(iter(entry))
        old = {} if isinstance(entry, str) else (entry[stage_name] or {})
        stages[i] = {stage_name: _deep_merge(old, params)}
    for sid in raw.get("drop") or []:
        if sid not in ids:
            raise ConfigError(f"{path}.drop", f"no step with id {sid!r}", f"steps: {', '.join(str(i) for i in ids)}")
        i = ids.index(sid)
        del stages[i], ids[i]
    stages.extend(raw.get("append") or [])
    merged["stages"] = stages
    return merged


def _check_file(path: str, yaml_path: str, what: str) -> None:
    if not Path(path).expanduser().exists():
        raise ConfigError(yaml_path, f"{what} {path!r} does not exist", "check the path (relative paths are from the current directory)")


def resolve_pipeline(data: dict[str, Any], name: str, source_file: str = "") -> Pipeline:
    """Validate one pipeline fully: keys, types, values, files, stage cross-checks."""
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("defaults", "expected a mapping")
    raw = _deep_merge(defaults, _resolve_raw(data, name))
    path = f"pipelines.{name}"
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"{path}.model", "missing model source", "e.g. packaged:minilm-l6, hf:albert-base-v2, config:albert-base-v2")
    try:
        source_info = models.describe_source(model)
    except FieldError as err:
        raise ConfigError(f"{path}.model", err.message, err.hint) from None
    task = build(TaskConfig, raw.get("task"), f"{path}.task")
    for split_name, split_path in task.files().items():
        _check_file(str(split_path), f"{path}.task", f"{split_name} file")
    seed = raw.get("seed", 42)
    threads = raw.get("threads", 2)
    for key, val in (("seed", seed), ("threads", threads)):
        if not isinstance(val, int) or isinstance(val, bool) or val < (1 if key == "threads" else 0):
            raise ConfigError(f"{path}.{key}", f"expected a non-negative integer, got {val!r}")
    budget = build(Budget, raw.get("budget"), f"{path}.budget")
    stages_raw = raw.get("stages")
    if not stages_raw:
        raise ConfigError(f"{path}.stages", "a pipeline needs at least one stage")
    steps: list[Step] = []
    seen: set[str] = set()
    for i, entry in enumerate(stages_raw):
        spath = f"{path}.stages[{i}]"
        if isinstance(entry, str):
            stage_name, params = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            (stage_name, params), = entry.items()
            params = dict(params or {})
        else:
            raise ConfigError(spath, "a step is `name` or `{name: {params}}`")
        if stage_name not in STAGE_MODULES:
            close = difflib.get_close_matches(str(stage_name), list(STAGE_MODULES), n=1)
            raise ConfigError(f"{spath}.{stage_name}", "unknown stage", f"did you mean {close[0]!r}?" if close else f"stages: {', '.join(STAGE_MODULES)}")
        step_id = str(params.pop("id", stage_name))
        if step_id in seen:
            raise ConfigError(f"{spath}.{stage_name}.id", f"duplicate step id {step_id!r}", "give repeated stages distinct `id`s")
        seen.add(step_id)
        inputs = params.pop("inputs", {}) or {}
        spec = get_stage(stage_name)
        for role, ref in inputs.items():
            if ref not in seen or ref == step_id:
                raise ConfigError(f"{spath}.{stage_name}.inputs.{role}", f"{ref!r} is not an earlier step")
        cfg = build(spec.config_cls, params, f"{spath}.{stage_name}")
        pipeline_check = getattr(cfg, "check_pipeline", None)
        if callable(pipeline_check):
            try:
                pipeline_check(source_info)
            except FieldError as err:
                raise ConfigError(f"{spath}.{stage_name}.{err.field}", err.message, err.hint) from None
        steps.append(Step(id=step_id, stage=stage_name, config=cfg, inputs=dict(inputs), path=f"{spath}.{stage_name}"))
    teacher = raw.get("teacher")
    if teacher is not None and teacher not in seen:
        raise ConfigError(f"{path}.teacher", f"{teacher!r} is not a step id")
    return Pipeline(
        name=name,
        description=str(raw.get("description", "")),
        model=model,
        task=task,
        seed=seed,
        threads=threads,
        budget=budget,
        teacher=teacher,
        steps=tuple(steps),
        source_file=source_file,
        random_weights=bool(source_info.get("random_weights")),
    )


def load_pipeline(path: str | Path, name: str) -> Pipeline:
    return resolve_pipeline(load_yaml(path), name, str(path))


def validate_file(path: str | Path) -> list[Pipeline]:
    """Validate every pipeline in the file; raises the first ConfigError."""
    data = load_yaml(path)
    return [resolve_pipeline(data, name, str(path)) for name in data["pipelines"]]


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
