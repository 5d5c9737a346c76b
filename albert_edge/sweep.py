"""`albert-edge sweep`: search compression recipes with Ray Tune (Optuna's NSGA-II as the searcher).

A trial is the project's own pipeline run (albert_edge.runner.run_pipeline) with the trial's
values applied to the config, up to the bundle, then one measurement of the bundled file:

- Builds share the content-addressed cache and its per-key leases, so trials that need the same
  artifact (the teacher; a student of one shape) build it once and the others reuse it. The cache
  may sit on storage every Ray node mounts (`--cache-dir`).
- Latency is measured in an exclusive phase per machine (albert_edge.nodelock): builds hold a
  machine-wide lock shared, a measurement holds it exclusively, so a latency figure never shares
  its machine with a build. The measurement is the benchmark harness itself (a fresh child
  process, the same device stamps and run stamps as the benchmark stage), at real lengths.
- Selection reads the validation accuracy of the shipped file (the bundle's own verdict on the
  held-out rows); dev accuracy comes from the same measurement and is reported only.
- Every finished trial is appended to sweeps/<name>/trials.jsonl by the driver as it arrives; a
  rerun reuses those rows (grid and random skip them, NSGA-II is told them as evaluated trials),
  and a trial that was in flight when the driver died rebuilds only what the cache lacks.
- A worker that dies mid-trial is retried by Ray (FailureConfig.max_failures); a trial whose
  pipeline fails is recorded with its error and the sweep goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from albert_edge.nodelock import LOCK_DIR_ENV
from albert_edge.schema import ConfigError, to_dict
from albert_edge.sweepspace import BASELINE, SweepSpec, trial_key

TRIALS = "trials.jsonl"
ROUNDS = "rounds.jsonl"  # the front and the baseline re-timed in interleaved rounds (--rounds)
FAULT_ENV = "ALBERT_EDGE_SWEEP_FAULT_DIR"  # tests only: pause/fail hooks (see _fault_hooks)


@dataclass(frozen=True)
class TrialContext:
    """What every trial needs besides its own values (sent once to the workers)."""

    data: dict[str, Any]  # the pipelines file, as plain data
    pipeline: str
    source_file: str
    cache_dir: str
    until: str
    fixed: dict[str, Any]
    measure: dict[str, Any]
    threads: int
    sweep: str
    cwd: str
    fault_dir: str = ""
    lock_dir: str = ""  # the machine lock's directory when the driver names one ($ALBERT_EDGE_NODE_LOCK_DIR); a local path on each node


# ---------------------------------------------------------------- one trial


def _fault_hooks(ctx: TrialContext, key: str) -> None:
    """Test hooks, active only when the driver had $ALBERT_EDGE_SWEEP_FAULT_DIR: every start
    appends `pid key` to <dir>/starts; the N-th start (N in <dir>/hold) writes its pid to
    <dir>/held and waits while <dir>/hold exists (so a test can kill it mid-trial); a trial whose
    key is in <dir>/fail raises."""
    if not ctx.fault_dir:
        return
    d = Path(ctx.fault_dir)
    d.mkdir(parents=True, exist_ok=True)
    with (d / "starts").open("a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(f"{os.getpid()} {key}\n")
        fh.flush()
        fh.seek(0)
        n = len(fh.read().splitlines())
    hold = d / "hold"
    if hold.is_file() and n == int(hold.read_text().strip() or "1"):
        (d / "held").write_text(f"{os.getpid()} {key}\n")
        while hold.exists():
            time.sleep(0.05)
    fail = d / "fail"
    if fail.is_file() and key in fail.read_text().split():
        raise RuntimeError(f"injected failure for trial {key}")


def _variant(bundle: Path, wanted: tuple[str, ...] | list[str]) -> dict[str, Any] | None:
    meta = json.loads((bundle / "metadata.json").read_text())
    by_name = {v["name"]: v for v in meta.get("variants", [])}
    return next((by_name[n] for n in wanted if n in by_name), None)


def measure_bundle(
    bundle: Path, variant: dict[str, Any], measure: dict[str, Any], stamp: dict[str, Any], lock_dir: Path | None = None
) -> dict[str, Any]:
    """Time one bundled file at real lengths with the benchmark harness (a fresh child process on
    the device named), with this machine's exclusive lock held when the device is this machine."""
    from benchmarks.devices.base import parse_spec
    from benchmarks.harness import BenchConfig, benchmark, bundle_targets

    targets = [t for t in bundle_targets(bundle) if t.name == variant["name"]]
    runtime = measure.get("runtime") or ("onnxruntime" if variant["format"] == "onnx" else "litert")
    cfg = BenchConfig(
        devices=(measure["device"],),
        threads=(measure["threads"],),
        runs=measure["runs"],
        min_secs=measure["min_secs"],
        warmup=measure["warmup"],
        warmup_min_secs=measure["warmup_min_secs"],
        seq_lens=(),
        runtimes=(runtime,),
        accuracy=True,
        accuracy_seq_lens=(),
        accuracy_rows=0,
        device_tests=False,
        real_lengths=True,
        timeout_s=measure["timeout_s"],
    )
    here = parse_spec(measure["device"]).kind in ("local", "qemu-aarch64")  # timed on this machine's CPU
    t0 = time.perf_counter()
    from albert_edge import nodelock

    with nodelock.measuring(lock_dir) if here else contextlib.nullcontext():
        load = os.getloadavg()[0] if here else None  # work the lock does not govern (other jobs) shows here
        rows = benchmark(targets, bundle / "eval.npz", cfg, stamp)
    row = next((r for r in rows if r.get("seq_len") == "real" and not r.get("error")), None)
    if row is None:
        errors = "; ".join(str(r.get("error")) for r in rows if r.get("error")) or "no real-length row"
        raise RuntimeError(f"measuring {variant['name']} on {measure['device']} failed: {errors}")
    keep = ("p50_ms", "p90_ms", "p99_ms", "cv", "runs", "run_seq_len", "rss_peak_mb", "rss_growth_mb", "load_ms", "runtime",
            "runtime_version", "threads", "device", "emulated", "stamp", "flags", "run_id", "git_commit", "git_dirty", "config_hash")
    out = {k: row.get(k) for k in keep}
    out.update(dev_accuracy=row.get("accuracy"), dev_rows=row.get("eval_rows"), measure_s=round(time.perf_counter() - t0, 3),
               load_1m_at_measure=load)
    return out


def run_trial(ctx: TrialContext, values: dict[str, Any], key: str, baseline: bool = False) -> dict[str, Any]:
    """Build one trial's pipeline up to the bundle, then measure its file. Returns the trial's
    record (status ok or failed, never raises for a pipeline failure)."""
    from albert_edge import nodelock
    from albert_edge.runner import run_pipeline
    from albert_edge.sweepspace import trial_pipeline
    from benchmarks.provenance import run_stamp

    if ctx.cwd and Path(ctx.cwd).is_dir():
        os.chdir(ctx.cwd)  # relative data paths in the pipelines file mean what they meant to the driver
    record: dict[str, Any] = {
        "trial": key,
        "baseline": baseline,
        "params": values,
        "sweep": ctx.sweep,
        "pipeline": ctx.pipeline,
        "node": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    t0 = time.perf_counter()
    try:
        _fault_hooks(ctx, key)
        pipe = trial_pipeline(ctx.data, ctx.pipeline, {**ctx.fixed, **values}, ctx.source_file)
        from dataclasses import replace

        pipe = replace(pipe, threads=ctx.threads)  # not in any cache key up to the bundle; keeps trials to their CPUs
        lock_dir = Path(ctx.lock_dir) if ctx.lock_dir else None
        if lock_dir is not None:
            lock_dir.mkdir(parents=True, exist_ok=True)
        with nodelock.building(lock_dir):
            result = run_pipeline(pipe, Path(ctx.cache_dir), until=ctx.until)
        record["build_s"] = round(time.perf_counter() - t0, 3)
        record["stages"] = [{"step": s.step, "status": s.status, "seconds": round(s.seconds, 3)} for s in result.steps]
        record["run_dir"] = str(result.run_dir)
        if result.exit_code != 0:
            return {**record, "status": "failed", "error": result.error}
        arts = {s.step: s.artifact for s in result.steps if s.artifact is not None}
        bundle_art = next(s.artifact for s in reversed(result.steps) if s.stage == "bundle" and s.artifact is not None)
        bundle = bundle_art.path / "bundle"
        teacher_id = pipe.teacher or next((s.id for s in pipe.steps if s.stage == "finetune"), None)
        teacher = arts.get(teacher_id) if teacher_id else None
        variant = _variant(bundle, ctx.measure["files"])
        if variant is None:
            names = [v["name"] for v in json.loads((bundle / "metadata.json").read_text()).get("variants", [])]
            return {**record, "status": "failed", "error": f"the bundle holds none of {list(ctx.measure['files'])} (it holds {names})"}
        verdict = variant.get("verdict") or {}
        stamp = run_stamp(pipe, {"bundle": bundle_art.key})
        record.update(bundle=str(bundle), bundle_key=bundle_art.key, file=variant["name"], format=variant["format"],
                      size_mb=round(variant["size_bytes"] / 1e6, 6), val_accuracy=verdict.get("accuracy"), val_rows=verdict.get("rows"),
                      teacher_val_accuracy=teacher.metrics.get("val_accuracy") if teacher else verdict.get("reference"),
                      random_weights=bool(pipe.random_weights))
        ref = record["teacher_val_accuracy"]
        if isinstance(ref, (int, float)) and isinstance(record["val_accuracy"], (int, float)):
            record["accuracy_drop_points"] = round(100.0 * (ref - record["val_accuracy"]), 4)
        record.update(measure_bundle(bundle, variant, ctx.measure, stamp, lock_dir))
        record["status"] = "ok"
    except ConfigError as err:
        record.update(status="failed", error=f"invalid pipeline: {err}")
    except Exception as err:  # a failing trial is a result, not the end of the sweep
        record.update(status="failed", error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc()[-2000:])
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


# ---------------------------------------------------------------- records


def read_trials(path: Path) -> list[dict[str, Any]]:
    """Rows of trials.jsonl; a last line cut short by a killed driver is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_trial(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(record, sort_keys=True, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def latest_by_trial(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One row per trial id: the last one written."""
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        out[str(r.get("trial"))] = r
    return out


# ---------------------------------------------------------------- the driver


def _trainable(config: dict[str, Any], ctx: TrialContext | None = None) -> None:
    from ray import tune

    assert ctx is not None
    values = config["values"] if "values" in config else {p: config["choices"][p][config[f"p{i}"]] for i, p in enumerate(config["paths"])}
    tune.report({**_report(run_trial(ctx, values, trial_key(values)))})


def _report(record: dict[str, Any]) -> dict[str, Any]:
    """What a trial reports to Tune: its record (as JSON text: Tune flattens dicts) and the
    objectives as numbers (absent for a failed trial, so Optuna counts it as pruned)."""
    from albert_edge.pareto import OBJECTIVES

    out: dict[str, Any] = {"record": json.dumps(record, default=str), "ok": record.get("status") == "ok"}
    if out["ok"]:
        out.update({k: float(record[k]) for k in OBJECTIVES if isinstance(record.get(k), (int, float))})
    return out


def _recorder(path: Path) -> Any:
    """Tune callback: append each trial's record to trials.jsonl as soon as it arrives, and a
    failed row for a trial Ray gave up on (its worker died more than max_failures times).
    Built here so that ray is imported only by the sweep."""
    from ray.tune import Callback

    class Recorder(Callback):
        def __init__(self) -> None:
            self.done: set[str] = set()

        def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any) -> None:
            append_trial(path, json.loads(result["record"]))
            self.done.add(trial.trial_id)

        def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            if trial.trial_id in self.done:
                return
            cfg = trial.config
            values = cfg.get("values") or {p: cfg["choices"][p][cfg[f"p{i}"]] for i, p in enumerate(cfg.get("paths", []))}
            err = str(getattr(trial, "error_msg", "") or "").strip().splitlines()
            append_trial(path, {"trial": trial_key(values), "baseline": False, "params": values, "status": "failed",
                                "error": f"Ray gave up on the trial: {err[-1][:300] if err else 'its worker died'}"})

    return Recorder()


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data))


def run_sweep(spec: SweepSpec, data: dict[str, Any], pipeline: str, source_file: str, out_dir: Path, cache_dir: Path,
              address: str | None = None, num_cpus: int | None = None, log: Any = print) -> list[dict[str, Any]]:
    """Run the sweep's missing trials on Ray, appending to out_dir/trials.jsonl; returns every row."""
    import ray

    trials_path = out_dir / TRIALS
    done = latest_by_trial(read_trials(trials_path))
    res = spec.resources
    ctx = TrialContext(data=_plain(data), pipeline=pipeline, source_file=source_file, cache_dir=str(cache_dir.resolve()), until=spec.until,
                       fixed=_plain(spec.fixed), measure=to_dict(spec.measure), threads=max(1, int(res.cpus_per_trial)), sweep=out_dir.name,
                       cwd=os.getcwd(), fault_dir=os.environ.get(FAULT_ENV, ""), lock_dir=os.environ.get(LOCK_DIR_ENV, ""))
    if done:
        log(f"resuming: {len(done)} finished trial(s) in {trials_path} are reused")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except ConnectionError as err:
                raise ConfigError("--address", f"cannot reach a Ray cluster at {address}: {str(err).splitlines()[0]}",
                                  "start one (`ray start --head`) or leave --address out for a local Ray") from None
        else:
            ray.init(num_cpus=num_cpus or max(1, int(res.max_concurrent * res.cpus_per_trial)), include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
    try:
        baseline_ref = None
        if spec.baseline and BASELINE not in done:
            remote = ray.remote(num_cpus=res.cpus_per_trial, max_retries=res.max_failures)(run_trial)
            baseline_ref = remote.remote(ctx, {}, BASELINE, True)
        _tune(spec, ctx, done, read_trials(trials_path), trials_path, out_dir, log)
        if baseline_ref is not None:
            try:
                rec = ray.get(baseline_ref)
            except Exception as err:  # the baseline's worker died more often than allowed
                rec = {"trial": BASELINE, "baseline": True, "params": {}, "status": "failed", "error": f"{type(err).__name__}: {err}"[:500]}
            append_trial(trials_path, rec)
    finally:
        if started_here:
            ray.shutdown()
    return list(latest_by_trial(read_trials(trials_path)).values())


def _tune(
    spec: SweepSpec,
    ctx: TrialContext,
    done: dict[str, dict[str, Any]],
    all_rows: list[dict[str, Any]],
    trials_path: Path,
    out_dir: Path,
    log: Any,
) -> None:
    from ray import tune

    res = spec.resources
    paths = list(spec.params)
    trainable = tune.with_resources(tune.with_parameters(_trainable, ctx=ctx), {"cpu": res.cpus_per_trial})
    run_config = tune.RunConfig(
        name="ray", storage_path=str(out_dir.resolve()), failure_config=tune.FailureConfig(max_failures=res.max_failures), verbose=0
    )
    if spec.strategy in ("grid", "random", "points"):
        pending = [v for v in spec.planned() if trial_key(v) not in done]
        log(f"{spec.strategy}: {len(pending)} trial(s) to run, {len(spec.planned()) - len(pending)} reused")
        if not pending:
            return
        tune_config = tune.TuneConfig(num_samples=1, max_concurrent_trials=res.max_concurrent, reuse_actors=False)
        param_space = {"values": tune.grid_search(pending)}
        search_alg = None
    else:
        import optuna
        from optuna.distributions import CategoricalDistribution
        from ray.tune.search.optuna import OptunaSearch

        from albert_edge.sweepspace import objective_modes

        space = {f"p{i}": CategoricalDistribution(list(range(len(spec.params[p])))) for i, p in enumerate(paths)}
        modes = objective_modes(spec)
        storage = optuna.storages.InMemoryStorage()
        study = optuna.create_study(
            storage=storage, study_name=out_dir.name, directions=["maximize" if m == "max" else "minimize" for m in modes]
        )
        told = 0
        for row in all_rows:  # NSGA-II may propose a recipe twice: every row counts as one of its trials
            if row.get("baseline"):
                continue
            try:
                idx = {f"p{i}": spec.params[p].index(row["params"][p]) for i, p in enumerate(paths)}
            except (KeyError, ValueError):
                continue  # a row from another space: kept in the file, not told to this search
            ok = row.get("status") == "ok" and all(isinstance(row.get(o), (int, float)) for o in spec.objectives)
            study.add_trial(optuna.trial.create_trial(
                params=idx, distributions=space, state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
                values=[float(row[o]) for o in spec.objectives] if ok else None))
            told += 1
        remaining = (spec.trials or 0) - told
        log(f"nsga2: {told} finished trial(s) told to the sampler, {max(0, remaining)} to run")
        if remaining <= 0:
            return
        sampler = optuna.samplers.NSGAIISampler(population_size=spec.population, seed=spec.seed + told)
        search_alg = OptunaSearch(
            space=space, metric=list(spec.objectives), mode=modes, sampler=sampler, storage=storage, study_name=out_dir.name
        )
        tune_config = tune.TuneConfig(
            search_alg=search_alg, num_samples=remaining, max_concurrent_trials=res.max_concurrent, reuse_actors=False
        )
        param_space = {"paths": paths, "choices": {p: spec.params[p] for p in paths}}
    run_config.callbacks = [_recorder(trials_path)]
    tuner = tune.Tuner(trainable, param_space=param_space, tune_config=tune_config, run_config=run_config)
    tuner.fit()


# ---------------------------------------------------------------- outputs


def write_pareto(rows: list[dict[str, Any]], spec: SweepSpec, out_dir: Path) -> dict[str, Any]:
    from albert_edge.pareto import OBJECTIVES, pareto_front

    front = pareto_front(rows, spec.objectives)
    doc = {"objectives": {o: OBJECTIVES[o] for o in spec.objectives}, "selection_split": "validation",
           "trials": len(rows), "ok": sum(r.get("status") == "ok" for r in rows), "front": [_summary(r) for r in front]}
    (out_dir / "pareto.json").write_text(json.dumps(doc, indent=2, default=str))
    return doc


def _summary(r: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "trial",
        "baseline",
        "params",
        "file",
        "val_accuracy",
        "accuracy_drop_points",
        "dev_accuracy",
        "p50_ms",
        "size_mb",
        "rss_peak_mb",
        "device",
        "runtime",
        "bundle",
    )
    return {k: r.get(k) for k in keys}


def retime(rows: list[dict[str, Any]], spec: SweepSpec, out_dir: Path, rounds: int, log: Any = print) -> list[dict[str, Any]]:
    """Time the front's trials and the baseline again in `rounds` interleaved rounds (round r
    times each of them once, in order, each in a fresh process with this machine's lock held
    exclusively), so a claim against the baseline holds in its worst round, not in one pass.
    Rewrites out_dir/rounds.jsonl."""
    from albert_edge.pareto import pareto_front
    from benchmarks.provenance import run_stamp

    chosen = [*pareto_front(rows, spec.objectives), *[r for r in rows if r.get("baseline") and r.get("status") == "ok"]]
    chosen = list({str(r["trial"]): r for r in chosen}.values())
    lock_dir = Path(os.environ[LOCK_DIR_ENV]) if os.environ.get(LOCK_DIR_ENV) else None
    plan = []  # what each round measures, resolved once: the file, its bundle and its stamp
    for r in chosen:
        bundle = Path(r["bundle"])
        variant = _variant(bundle, [r["file"]])
        if variant is None:
            raise ConfigError("--rounds", f"trial {r['trial']}: {r['file']} is no longer in {bundle}",
                              "rerun the sweep without --report-only")
        plan.append((r, bundle, variant, {**run_stamp(None, {"bundle": r.get("bundle_key")}, r.get("pipeline")),
                                          "config_hash": r.get("config_hash")}))
    measure = to_dict(spec.measure)
    out: list[dict[str, Any]] = []
    for rnd in range(1, rounds + 1):
        for r, bundle, variant, stamp in plan:
            got = measure_bundle(bundle, variant, measure, stamp, lock_dir)
            out.append({"trial": r["trial"], "baseline": bool(r.get("baseline")), "round": rnd, "sweep": out_dir.name, **got})
            log(f"round {rnd}/{rounds}: {'hand-tuned' if r.get('baseline') else r['trial']} p50 {got['p50_ms']:.3f} ms")
    (out_dir / ROUNDS).write_text("".join(json.dumps(x, default=str) + "\n" for x in out))
    return out


def pick_and_bundle(rows: list[dict[str, Any]], constraints: dict[str, Any], out_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The best trial under the constraints, its bundle copied to out_dir/pick/bundle with a
    `set:` block that turns the recipe into a pipeline."""
    from albert_edge.pareto import pick

    best = pick(rows, constraints)
    if best is None:
        return None, None
    dest = out_dir / "pick"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(best["bundle"], dest / "bundle")
    steps: dict[str, Any] = {}
    for path, value in best.get("params", {}).items():
        node = steps
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    (dest / "pick.json").write_text(json.dumps({"trial": _summary(best), "constraints": constraints, "set": steps}, indent=2, default=str))
    return best, dest / "bundle"


def cli_sweep(args: Any) -> int:
    """`albert-edge sweep FILE -p PIPELINE --space SPACE`: 0 done (and picked, with --pick),
    1 nothing meets the constraints of --pick, 2 bad input."""
    from albert_edge.config import load_pipeline, load_yaml
    from albert_edge.sweepspace import check_paths, check_values, load_space

    try:
        import ray  # noqa: F401
        from ray import tune  # noqa: F401
    except ImportError as err:
        raise ConfigError("sweep", f"Ray Tune is not installed ({err})", "pip install 'albert-edge[sweep]'") from None
    from albert_edge.config import line_of

    if args.rounds < 0:
        raise ConfigError("--rounds", f"{args.rounds} rounds", "0 (no re-timing) or more")
    spec, space_data = load_space(args.space)
    pipe = load_pipeline(args.file, args.pipeline)
    data = load_yaml(args.file)
    try:
        check_paths(spec, pipe)
        check_values(spec, data, args.pipeline, str(args.file))
    except ConfigError as err:
        err.file, err.line = str(args.space), line_of(space_data, err.path.split("[")[0])
        raise
    if spec.strategy == "nsga2":
        import optuna  # noqa: F401
    name = spec.name or f"{args.pipeline}-{Path(args.space).stem}"
    out_dir = (args.out or Path("sweeps")) / name
    cache = args.cache_dir or _default_cache()
    constraints = {k: v for k, v in to_dict(spec.constraints).items() if v is not None}
    for k in ("max_accuracy_drop", "max_p50_ms", "max_size_mb", "max_rss_mb"):
        if getattr(args, k, None) is not None:
            constraints[k] = getattr(args, k)
    if args.plan:
        planned = spec.planned() if spec.strategy != "nsga2" else []
        print(
            f"sweep {name}: pipeline {args.pipeline} valid with every value; {spec.strategy}, "
            f"{len(planned) if planned else spec.trials} trial(s)"
            f"{' + the hand-tuned baseline' if spec.baseline else ''}; results in {out_dir}"
        )
        for v in planned:
            print(f"  {trial_key(v)} {json.dumps(v)}")
        if spec.strategy == "nsga2":
            print(f"  chosen by NSGA-II (population {spec.population}, seed {spec.seed}) from {len(spec.combinations())} combinations")
        return 0
    if not args.report_only:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "space.json").write_text(
            json.dumps({"pipeline": args.pipeline, "file": str(args.file), "sweep": to_dict(spec)}, indent=2)
        )
        print(f"sweep {name}: {spec.strategy}, {len(spec.params)} parameter(s), results in {out_dir}", file=sys.stderr)
        rows = run_sweep(spec, data, args.pipeline, str(Path(args.file).resolve()), out_dir, cache, args.address, args.num_cpus,
                         log=lambda m: print(m, file=sys.stderr))
    else:
        rows = list(latest_by_trial(read_trials(out_dir / TRIALS)).values())
    pareto = write_pareto(rows, spec, out_dir)
    from albert_edge.sweep_report import write_report

    round_rows = read_trials(out_dir / ROUNDS) if (out_dir / ROUNDS).is_file() else []
    if args.rounds:
        round_rows = retime(rows, spec, out_dir, args.rounds, log=lambda m: print(m, file=sys.stderr))
    report = write_report(rows, spec, pareto, out_dir, constraints, round_rows)
    ok = pareto["ok"]
    print(f"{len(rows)} trial(s), {ok} ok, {len(pareto['front'])} on the front -> {out_dir / 'pareto.json'}, {report}", file=sys.stderr)
    for r in rows:
        if r.get("status") != "ok":
            print(f"  trial {r.get('trial')} failed: {str(r.get('error'))[:200]}", file=sys.stderr)
    if args.pick:
        best, bundle = pick_and_bundle(rows, constraints, out_dir)
        if best is None:
            print(f"no trial meets the constraints {constraints}", file=sys.stderr)
            return 1
        print(f"picked trial {best['trial']} {json.dumps(best.get('params'))}: val {100 * best['val_accuracy']:.2f}% "
              f"p50 {best['p50_ms']:.3f} ms {best['size_mb']:.2f} MB ({best['file']})", file=sys.stderr)
        print(bundle)
    return 0


def _default_cache() -> Path:
    from albert_edge.paths import default_cache_dir

    return default_cache_dir()
