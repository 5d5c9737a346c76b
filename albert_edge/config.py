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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from albert_edge import models
from albert_edge.budget import Budget
from albert_edge.data import TaskConfig
from albert_edge.registry import STAGE_MODULES, get_stage
from albert_edge.schema import ConfigError, FieldError, build, safe_name, short_repr, to_dict

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
    seed: int | None = None  # this step's seed, when it differs from the pipeline's (a seed-spread run)

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

    def for_step(self, step: Step) -> Pipeline:
        """The pipeline as `step` sees it: its own seed when it sets one."""
        return self if step.seed is None else replace(self, seed=step.seed)

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


# A pipelines file is a few kilobytes; these bounds stop a hostile or broken file (an alias
# "billion laughs" bomb, a huge generated file) long before it costs memory or minutes.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000  # nodes after alias expansion
SUPPORTED_VERSIONS = (1,)


class _YamlLimit(Exception):
    """Raised inside the loader; load_yaml turns it into a ConfigError naming the line."""

    def __init__(self, line: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.line, self.message, self.hint = line, message, hint


class _Map(dict):  # type: ignore[type-arg]
    """A YAML mapping that remembers each key's line, for file:line errors."""

    lines: dict[Any, int]


class _Seq(list):  # type: ignore[type-arg]
    """A YAML sequence that remembers each item's line."""

    lines: list[int]


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load semantics, plus: duplicate keys are errors, the document's size after
    alias expansion is bounded (checked on the node graph before any object is built), and
    mappings and lists remember their lines."""

    def construct_document(self, node: yaml.Node) -> Any:
        _expanded_size(node, {}, set())
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # the base constructor reports unhashable keys
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise _YamlLimit(line, f"duplicate key {key!r} (first at line {seen[key]})", "each key may appear once per mapping")
                seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_lined_map(self, node: yaml.MappingNode) -> Any:
        data = _Map()
        data.lines = {}
        yield data
        data.update(self.construct_mapping(node))
        for key_node, _ in node.value:
            try:
                data.lines.setdefault(self.construct_object(key_node), key_node.start_mark.line + 1)
            except TypeError:
                pass

    def construct_lined_seq(self, node: yaml.SequenceNode) -> Any:
        data = _Seq()
        data.lines = [item.start_mark.line + 1 for item in node.value]
        yield data
        data.extend(self.construct_sequence(node))


_BoundedLoader.add_constructor("tag:yaml.org,2002:map", _BoundedLoader.construct_lined_map)
_BoundedLoader.add_constructor("tag:yaml.org,2002:seq", _BoundedLoader.construct_lined_seq)


def _expanded_size(node: yaml.Node, memo: dict[int, int], active: set[int]) -> int:
    """Nodes in the document with every alias expanded (shared nodes counted per use)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise _YamlLimit(node.start_mark.line + 1, "an alias refers to itself (recursive structure)")
    active.add(key)
    size = 1
    if isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        size += _expanded_size(child, memo, active)
        if size > MAX_YAML_NODES:
            raise _YamlLimit(child.start_mark.line + 1, f"more than {MAX_YAML_NODES} values once aliases are expanded",
                             "a pipelines file is small; this looks like an alias bomb")
    active.discard(key)
    memo[key] = size
    return size


def line_of(data: Any, yaml_path: str) -> int | None:
    """The line of the deepest key or item of `yaml_path` (e.g. pipelines.p.stages[0].x)
    that the loaded file holds; None if not even the first key is there."""
    line: int | None = None
    node, rest = data, yaml_path
    while rest:
        if isinstance(node, _Seq) and rest.startswith("["):
            idx, _, rest = rest[1:].partition("]")
            if not idx.isdigit() or int(idx) >= len(node):
                break
            line, node = node.lines[int(idx)], node[int(idx)]
        elif isinstance(node, _Map):
            match = [k for k in node if isinstance(k, str) and rest.startswith(k) and rest[len(k):len(k) + 1] in ("", ".", "[")]
            if not match:
                break
            k = max(match, key=len)
            line, node, rest = node.lines.get(k, line), node[k], rest[len(k):]
        else:
            break
        rest = rest.removeprefix(".")
    return line


def _fail(file: str, line: int | None, path: str, message: str, hint: str = "") -> ConfigError:
    return ConfigError(path, message, hint, file=file, line=line)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read and bound-check a pipelines file: size, encoding, alias expansion, duplicate
    keys, version, and the names that later become directory names."""
    p = Path(path)
    file = str(path)
    if not p.is_file():
        raise ConfigError(file, "file not found", "pass the path of a pipelines.yaml")
    with p.open("rb") as fh:
        raw = fh.read(MAX_YAML_BYTES + 1)
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(file, f"larger than {MAX_YAML_BYTES >> 10} KiB", "a pipelines file is a few KiB; is this the right file?")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(f"{file}:{line}", f"not UTF-8 (byte 0x{raw[err.start]:02x})", "save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlLimit as err:
        raise ConfigError(f"{file}:{err.line}", err.message, err.hint) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else file
        raise ConfigError(where, f"not valid YAML ({getattr(err, 'problem', err)})") from None
    except RecursionError:
        raise ConfigError(file, "nested too deeply") from None
    if not isinstance(data, dict) or not isinstance(data.get("pipelines"), dict):
        raise _fail(file, line_of(data, "pipelines"), "pipelines", "missing or not a mapping", "the file needs `pipelines: {name: {...}}`")
    for key in data:
        if key not in ("defaults", "pipelines", "version"):
            raise _fail(file, line_of(data, str(key)), str(key), "unknown top-level key", "top-level keys: version, defaults, pipelines")
    if "version" in data:
        version = data["version"]
        if type(version) is not int or version not in SUPPORTED_VERSIONS:
            raise _fail(file, line_of(data, "version"), "version", f"{version!r} is not a supported version",
                        f"supported: {', '.join(map(str, SUPPORTED_VERSIONS))}")
    if not data["pipelines"]:
        raise _fail(
            file,
            line_of(data, "pipelines"),
            "pipelines",
            "no pipelines defined",
            "add one: `pipelines: {name: {model: ..., stages: [...]}}`",
        )
    for name in data["pipelines"]:
        try:
            safe_name(name, "pipeline name")
        except ValueError as err:
            line = getattr(data["pipelines"], "lines", {}).get(name)
            raise _fail(file, line, f"pipelines.{name}", str(err), "it names the run directory") from None
    return data


def _locate(err: ConfigError, data: dict[str, Any], file: str) -> ConfigError:
    """Attach the file and the line of the error's YAML path (best effort)."""
    if not err.file:
        err.file = file
        err.line = line_of(data, err.path)
    return err


def _step_id(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        if isinstance(params, dict) and "id" in params:
            return str(params["id"])
        return name if isinstance(name, str) else None
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
    stages_raw = merged.get("stages") or []
    if not isinstance(stages_raw, list):
        raise ConfigError(
            f"{path}.stages", f"expected a list of steps, got {short_repr(stages_raw)}", "stages: [finetune, {evaluate: {...}}]"
        )
    stages = list(stages_raw)
    ids = [_step_id(s) for s in stages]
    set_ = _typed(raw.get("set"), dict, f"{path}.set", "a mapping of step id -> parameters", "set: {finetune: {train: {epochs: 1}}}")
    drop = _typed(raw.get("drop"), list, f"{path}.drop", "a list of step ids", "drop: [evaluate]")
    append = _typed(raw.get("append"), list, f"{path}.append", "a list of steps", "append: [evaluate]")
    for sid, params in set_.items():
        if sid not in ids:
            raise ConfigError(f"{path}.set.{sid}", "no step with this id", f"steps: {', '.join(str(i) for i in ids)}")
        _typed(params, dict, f"{path}.set.{sid}", "a mapping of parameters", "set: {finetune: {train: {epochs: 1}}}")
        i = ids.index(sid)
        entry = stages[i]
        stage_name = entry if isinstance(entry, str) else next(iter(entry))
        old = {} if isinstance(entry, str) else (entry[stage_name] or {})
        if not isinstance(old, dict):
            raise ConfigError(f"{path}.stages[{i}].{stage_name}", f"expected a mapping of parameters, got {short_repr(old)}")
        stages[i] = {stage_name: _deep_merge(old, params)}
    for sid in drop:
        if not isinstance(sid, str) or sid not in ids:
            raise ConfigError(f"{path}.drop", f"no step with id {short_repr(sid)}", f"steps: {', '.join(str(i) for i in ids)}")
        i = ids.index(sid)
        del stages[i], ids[i]
    stages.extend(append)
    merged["stages"] = stages
    return merged


def _typed(value: Any, kind: type, path: str, what: str, hint: str = "") -> Any:
    """`value` (or an empty `kind` when absent) if it is a `kind`; else a ConfigError."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ConfigError(path, f"expected {what}, got {short_repr(value)}", hint)
    return value


def _check_file(path: str, yaml_path: str, what: str) -> None:
    if not Path(path).expanduser().exists():
        raise ConfigError(yaml_path, f"{what} {path!r} does not exist", "check the path (relative paths are from the current directory)")


def _check_inputs_exist(
    roles: tuple[str, ...], explicit: dict[str, Any], kinds: list[str], teacher: Any, earlier: set[str], path: str
) -> None:
    """Each required input role has an earlier step to come from (as the runner resolves it),
    so a pipeline that cannot run fails validation instead of stopping mid-run."""
    for role in roles:
        name = role.lstrip("?")
        if role.startswith("?") or name == "*" or name in explicit:
            continue
        if name == "teacher":
            ok = teacher in earlier if isinstance(teacher, str) else "model" in kinds
        else:
            ok = name in kinds
        if not ok:
            raise ConfigError(path, f"needs a `{name}` artifact from an earlier step", "add a stage that makes one before it")


def resolve_pipeline(data: dict[str, Any], name: str, source_file: str = "") -> Pipeline:
    """Validate one pipeline fully: keys, types, values, files, stage cross-checks."""
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError("defaults", "expected a mapping")
    raw = _deep_merge(defaults, _resolve_raw(data, name))
    path = f"pipelines.{name}"
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{path}.description", f"expected a string, got {short_repr(description)}")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigError(
            f"{path}.model",
            f"missing model source (got {short_repr(model)})",
            "e.g. packaged:minilm-l6, hf:albert-base-v2, config:albert-base-v2",
        )
    try:
        source_info = models.describe_source(model)
    except FieldError as err:
        raise ConfigError(f"{path}.model", err.message, err.hint) from None
    task = build(TaskConfig, raw.get("task"), f"{path}.task")
    try:
        for split_name, split_path in task.files().items():
            _check_file(str(split_path), f"{path}.task", f"{split_name} file")
    except (ValueError, RuntimeError, OSError) as err:  # a NUL byte, an unknown ~user
        raise ConfigError(f"{path}.task", f"unusable data path ({err})") from None
    seed = raw.get("seed", 42)
    threads = raw.get("threads", 2)
    for key, val in (("seed", seed), ("threads", threads)):
        if not isinstance(val, int) or isinstance(val, bool) or val < (1 if key == "threads" else 0) or val >= 2**32:
            raise ConfigError(
                f"{path}.{key}",
                f"expected {'a positive' if key == 'threads' else 'a non-negative'} integer below 2**32, got {short_repr(val)}",
            )
    budget = build(Budget, raw.get("budget"), f"{path}.budget")
    stages_raw = raw.get("stages")
    if stages_raw is not None and not isinstance(stages_raw, list):
        raise ConfigError(f"{path}.stages", f"expected a list of steps, got {short_repr(stages_raw)}")
    if not stages_raw:
        raise ConfigError(f"{path}.stages", "a pipeline needs at least one stage")
    steps: list[Step] = []
    seen: set[str] = set()
    # What static checks may know of each step's input model: the source's architecture,
    # as changed by earlier steps that say how (`output_facts`), plus the task's max length.
    base_facts = dict(source_info, max_seq_len=task.max_seq_len)
    facts_by_step: dict[str, dict[str, Any]] = {}
    latest_facts = base_facts
    kinds: list[str] = []  # output kind of each earlier step
    for i, entry in enumerate(stages_raw):
        spath = f"{path}.stages[{i}]"
        if isinstance(entry, str):
            stage_name, params = entry, {}
        elif isinstance(entry, dict) and len(entry) == 1:
            (stage_name, params), = entry.items()
            if params is not None and not isinstance(params, dict):
                raise ConfigError(
                    f"{spath}.{stage_name}",
                    f"expected a mapping of parameters, got {short_repr(params)}",
                    f"e.g. {{{stage_name}: {{id: ...}}}}",
                )
            params = dict(params or {})
        else:
            raise ConfigError(spath, "a step is `name` or `{name: {params}}`")
        if stage_name not in STAGE_MODULES:
            close = difflib.get_close_matches(str(stage_name), list(STAGE_MODULES), n=1)
            raise ConfigError(
                f"{spath}.{stage_name}", "unknown stage", f"did you mean {close[0]!r}?" if close else f"stages: {', '.join(STAGE_MODULES)}"
            )
        step_id = params.pop("id", stage_name)
        if isinstance(step_id, int) and not isinstance(step_id, bool):
            step_id = str(step_id)
        try:
            safe_name(step_id, "step id")
        except ValueError as err:
            raise ConfigError(f"{spath}.{stage_name}.id", str(err), "the id names the step's artifact directory") from None
        if step_id in seen:
            raise ConfigError(f"{spath}.{stage_name}.id", f"duplicate step id {step_id!r}", "give repeated stages distinct `id`s")
        seen.add(step_id)
        inputs = _typed(
            params.pop("inputs", None),
            dict,
            f"{spath}.{stage_name}.inputs",
            "a mapping of role -> earlier step id",
            "inputs: {teacher: teacher}",
        )
        step_seed = params.pop("seed", None)
        if step_seed is not None and (not isinstance(step_seed, int) or isinstance(step_seed, bool) or not 0 <= step_seed < 2**32):
            raise ConfigError(f"{spath}.{stage_name}.seed", f"expected an integer in 0..2**32-1, got {short_repr(step_seed)}")
        spec = get_stage(stage_name)
        for role, ref in inputs.items():
            if not isinstance(ref, str) or ref not in seen or ref == step_id:
                raise ConfigError(f"{spath}.{stage_name}.inputs.{role}", f"{short_repr(ref)} is not an earlier step")
        cfg = build(spec.config_cls, params, f"{spath}.{stage_name}")
        inherit_threads = getattr(cfg, "inherit_threads", None)
        if "threads" not in params and callable(inherit_threads):  # a stage's own thread counts default to the pipeline's
            cfg = inherit_threads(threads)
        facts = base_facts
        if "model" in spec.inputs:
            facts = facts_by_step.get(inputs["model"], base_facts) if "model" in inputs else latest_facts
        pipeline_check = getattr(cfg, "check_pipeline", None)
        if callable(pipeline_check):
            try:
                pipeline_check(facts)
            except FieldError as err:
                raise ConfigError(f"{spath}.{stage_name}.{err.field}", err.message, err.hint) from None
        _check_inputs_exist(spec.inputs, inputs, kinds, raw.get("teacher"), seen - {step_id}, f"{spath}.{stage_name}")
        kinds.append(spec.output_kind)
        if spec.output_kind == "model":
            derive = getattr(cfg, "output_facts", None)
            latest_facts = facts_by_step[step_id] = derive(facts) if callable(derive) else facts
        steps.append(Step(id=step_id, stage=stage_name, config=cfg, inputs=dict(inputs), path=f"{spath}.{stage_name}", seed=step_seed))
    teacher = raw.get("teacher")
    if teacher is not None and (not isinstance(teacher, str) or teacher not in seen):
        raise ConfigError(f"{path}.teacher", f"{short_repr(teacher)} is not a step id", f"steps: {', '.join(sorted(seen))}")
    return Pipeline(
        name=name,
        description=description,
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
    """Load and validate one pipeline; a ConfigError names the file and line."""
    data = load_yaml(path)
    try:
        return resolve_pipeline(data, name, str(path))
    except ConfigError as err:
        raise _locate(err, data, str(path)) from None


def validate_file(path: str | Path) -> list[Pipeline]:
    """Validate every pipeline in the file; raises the first ConfigError (with file:line)."""
    data = load_yaml(path)
    try:
        return [resolve_pipeline(data, name, str(path)) for name in data["pipelines"]]
    except ConfigError as err:
        raise _locate(err, data, str(path)) from None


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
