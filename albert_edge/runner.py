"""Run a validated pipeline: resolve inputs, reuse or build each stage's artifact, gate on
the accuracy budget, log, and summarise."""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albert_edge.artifacts import Artifact, ArtifactStore, library_versions
from albert_edge.budget import judge
from albert_edge.config import Pipeline, Step, stable_hash
from albert_edge.contract import GateFailed, StageContext, StageError, StageFailed, StageInputError
from albert_edge.data import DataError
from albert_edge.lease import Lease, LeaseTimeout
from albert_edge.registry import StageSpec, get_stage
from albert_edge.schema import to_dict

log = logging.getLogger("albert_edge")


@dataclass
class StepResult:
    step: str
    stage: str
    status: str  # built | reused | failed | gate-failed
    seconds: float
    artifact: Artifact | None
    metrics: dict[str, Any]
    note: str = ""


@dataclass
class RunResult:
    pipeline: str
    run_dir: Path
    steps: list[StepResult]
    error: str = ""
    exit_code: int = 0


def _resolve_inputs(spec: StageSpec, step: Step, pipeline: Pipeline, done: list[tuple[Step, Artifact]]) -> dict[str, Any]:
    by_id = {s.id: a for s, a in done}
    out: dict[str, Any] = {}
    for role in spec.inputs:
        optional = role.startswith("?")
        name = role.lstrip("?")
        if name in step.inputs:
            out[name] = by_id[step.inputs[name]]
            continue
        if name == "*":
            out["*"] = [a for _, a in done]
            continue
        found: Artifact | None = None
        if name == "teacher":
            if pipeline.teacher:
                found = by_id.get(pipeline.teacher)
            else:
                found = next((a for s, a in done if s.stage == "finetune"), None)
                found = found or next((a for _, a in done if a.kind == "model"), None)
        else:
            found = next((a for _, a in reversed(done) if a.kind == name), None)
        if found is None and not optional:
            raise StageFailed(f"{step.path}: needs a `{name}` artifact from an earlier step; add a stage that makes one before it")
        out[name] = found
    return out


def cached_artifacts(pipeline: Pipeline, cache_dir: Path, verify: bool = True) -> tuple[list[tuple[Step, Artifact]], str]:
    """The pipeline's completed artifacts, in step order, up to the first step not built
    (and why it is not). Reads the cache only; builds nothing."""
    store = ArtifactStore(cache_dir / "artifacts")
    done: list[tuple[Step, Artifact]] = []
    for step in pipeline.steps:
        spec = get_stage(step.stage)
        try:
            inputs = _resolve_inputs(spec, step, pipeline, done)
        except StageFailed as err:
            return done, str(err)
        art, why = store.check(step.id, cache_key(spec, step, pipeline, inputs), verify=verify)
        if art is None:
            return done, f"{step.id}: {why}"
        done.append((step, art))
    return done, ""


def cache_key(spec: StageSpec, step: Step, pipeline: Pipeline, inputs: dict[str, Any]) -> str:
    keyed_inputs = {
        role: ([a.key for a in art] if isinstance(art, list) else (art.key if art else None))
        for role, art in inputs.items()
    }
    settings = pipeline.for_step(step).settings_dict()
    if not spec.uses_budget:
        settings.pop("budget")
    return stable_hash({
        "stage": spec.name, "version": spec.version, "config": step.config_dict(),
        "inputs": keyed_inputs, "settings": settings,
    })


def _setup_logging(run_dir: Path, verbose: bool) -> logging.Handler:
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False  # libraries that configure the root logger would print every line twice
    if not any(isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) for h in log.handlers):
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    return handler


def run_pipeline(
    pipeline: Pipeline,
    cache_dir: Path,
    from_step: str | None = None,
    force: bool = False,
    until: str | None = None,
    verbose: bool = False,
) -> RunResult:
    import torch

    torch.set_num_threads(pipeline.threads)
    store = ArtifactStore(cache_dir / "artifacts")
    stale = store.clean_tmp()
    run_dir = _new_run_dir(cache_dir / "runs", pipeline.name)
    handler = _setup_logging(run_dir, verbose)
    result = RunResult(pipeline.name, run_dir, [])
    if stale:
        log.info("removed %d half-written artifact(s) from an interrupted run (owner gone)", stale)
    log.info("pipeline %s (%d steps) -> %s", pipeline.name, len(pipeline.steps), run_dir)
    if pipeline.random_weights:
        log.info("model %s has RANDOM weights: results are for latency and memory only", pipeline.model)
    ids = [s.id for s in pipeline.steps]
    redo_from = ids.index(from_step) if from_step else (0 if force else len(ids))
    done: list[tuple[Step, Artifact]] = []
    try:
        for i, step in enumerate(pipeline.steps):
            spec = get_stage(step.stage)
            inputs = _resolve_inputs(spec, step, pipeline, done)
            key = cache_key(spec, step, pipeline, inputs)
            t0 = time.perf_counter()
            forced = i >= redo_from
            art, why = (None, "forced") if forced else store.get(step.id, key)
            lease = None
            if art is None:  # build under the key's lease; another run may be building it now
                lease = _lease(store, step, key)
                if not forced:
                    art, why_now = store.get(step.id, key, held=lease)
                    why = why if why_now == "not built" else why_now
            try:
                if art is not None:
                    log.info("[%d/%d] %s: reused %s", i + 1, len(ids), step.id, art.path.name)
                    res = StepResult(step.id, step.stage, "reused", 0.0, art, art.metrics)
                else:
                    assert lease is not None
                    log.info("[%d/%d] %s: running (%s)", i + 1, len(ids), step.id, why)
                    art = _build(spec, step, pipeline, inputs, store, key, lease)
                    res = StepResult(step.id, step.stage, "built", time.perf_counter() - t0, art, art.metrics)
                    log.info("[%d/%d] %s: done in %.1fs %s", i + 1, len(ids), step.id, res.seconds, _short_metrics(art.metrics))
            finally:
                if lease is not None:
                    lease.release()
            result.steps.append(res)
            done.append((step, art))
            gate = _gate(spec, pipeline, inputs, art)
            if gate:
                res.status = "gate-failed"
                res.note = gate
                raise GateFailed(gate)
            if until and step.id == until:
                break
    except GateFailed as err:
        result.error, result.exit_code = str(err), 1
        log.error("budget gate failed: %s", err)
    except StageFailed as err:
        result.error, result.exit_code = str(err), (2 if isinstance(err, StageInputError) else 1)
        log.error("%s", err)
    finally:
        _write_summary(result, pipeline)
        log.info("\n%s", summary_table(result))
        log.removeHandler(handler)
        handler.close()
    return result


def _new_run_dir(runs: Path, name: str) -> Path:
    """A run directory of its own: runs sharing a cache may start in the same second."""
    runs.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 1000):
        d = runs / (stem if n == 1 else f"{stem}-{n}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise StageFailed(f"could not create a run directory under {runs}")


def _lease(store: ArtifactStore, step: Step, key: str) -> Lease:
    try:
        return store.lease(step.id, key, log)
    except LeaseTimeout as err:
        raise StageFailed(str(err)) from None


def _build(spec: StageSpec, step: Step, pipeline: Pipeline, inputs: dict[str, Any], store: ArtifactStore, key: str,
           lease: Lease) -> Artifact:
    tmp = store.new_tmp(step.id, key, lease)
    pipeline = pipeline.for_step(step)
    ctx = StageContext(step, step.config, pipeline, inputs, tmp, log)
    try:
        metrics = spec.fn(ctx) or {}
    except (StageInputError, DataError) as err:
        raise StageInputError(f"stage {step.id}: bad input: {err}") from None
    except StageError as err:
        raise StageFailed(f"stage {step.id} failed: {err}") from None
    except Exception as err:  # a bug or an environment problem: keep the traceback in the log
        log.debug("traceback:\n%s", traceback.format_exc())
        raise StageFailed(f"stage {step.id} failed: {type(err).__name__}: {err} (traceback in run.log; rerun with -v)") from None
    input_keys = {r: ([a.key for a in v] if isinstance(v, list) else (v.key if v else None)) for r, v in inputs.items()}
    manifest = {
        "kind": spec.output_kind,
        "stage": spec.name,
        "stage_version": spec.version,
        "config": step.config_dict(),
        "pipeline": pipeline.name,
        "settings": pipeline.settings_dict(),
        "inputs": input_keys,
        "seed": pipeline.seed,
        "random_weights": pipeline.random_weights,
        "libraries": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": to_dict(metrics),
        "info": to_dict(ctx.info),
    }
    if not lease.held():  # judged dead (heartbeat lost) and taken over: the new holder's build wins
        raise StageFailed(f"stage {step.id}: another run took over its lease while it was building; rerun to reuse that build")
    return store.commit(tmp, step.id, key, manifest)


def _gate(spec: StageSpec, pipeline: Pipeline, inputs: dict[str, Any], art: Artifact) -> str:
    """The budget gate of a gated stage: the stage's own verdict over its files when it gives
    one, else its validation accuracy judged against the teacher's (albert_edge.budget)."""
    if not spec.gated:
        return ""
    own = art.metrics.get("verdict")
    if isinstance(own, dict):
        return "" if own.get("passed") else f"{art.step}: {'; '.join(own.get('reasons') or ['failed'])}; artifact kept at {art.path}"
    teacher = inputs.get("teacher")
    if pipeline.budget.max_accuracy_drop is None or teacher is None:
        return ""
    key = "val_accuracy" if "val_accuracy" in art.metrics and "val_accuracy" in teacher.metrics else "accuracy"
    acc, ref = art.metrics.get(key), teacher.metrics.get(key)
    if acc is None or ref is None:
        return ""
    verdict = judge(art.step, pipeline.budget, accuracy=acc, reference=ref, rows=int(art.metrics.get("val_n") or 0),
                           split="validation" if key == "val_accuracy" else "eval")
    return "" if verdict.passed else f"{verdict.message()}; artifact kept at {art.path}"


def _short_metrics(m: dict[str, Any]) -> str:
    keys = [k for k in ("accuracy", "agreement", "params", "size_mb") if k in m]
    return " ".join(f"{k}={m[k]:.4g}" if isinstance(m[k], float) else f"{k}={m[k]}" for k in keys)


def summary_table(result: RunResult) -> str:
    rows = [("step", "stage", "status", "time", "accuracy", "artifact")]
    for s in result.steps:
        acc = s.metrics.get("accuracy")
        rows.append((
            s.step, s.stage, s.status, f"{s.seconds:.1f}s",
            f"{100 * acc:.2f}%" if isinstance(acc, (int, float)) else "-",
            s.artifact.path.name if s.artifact else "-",
        ))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if result.error:
        lines.append(f"FAILED: {result.error}")
    return "\n".join(lines)


def _write_summary(result: RunResult, pipeline: Pipeline) -> None:
    data = {
        "pipeline": pipeline.name,
        "source_file": pipeline.source_file,
        "random_weights": pipeline.random_weights,
        "error": result.error,
        "steps": [
            {"step": s.step, "stage": s.stage, "status": s.status, "seconds": round(s.seconds, 3),
             "artifact": str(s.artifact.path) if s.artifact else None, "metrics": s.metrics, "note": s.note}
            for s in result.steps
        ],
    }
    (result.run_dir / "summary.json").write_text(json.dumps(data, indent=2, default=str))
    latest = result.run_dir.parent / f"{pipeline.name}-latest"
    try:
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(result.run_dir.name)
    except OSError:
        pass
