"""`albert-edge` command line. Exit codes: 0 success, 1 a pipeline gate or stage failed,
2 bad input or config. Bad input never ends in a bare traceback."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import typing
from collections.abc import Callable
from pathlib import Path

from albert_edge.data import DataError
from albert_edge.paths import default_cache_dir
from albert_edge.schema import ConfigError

EXIT_OK, EXIT_GATE, EXIT_INPUT = 0, 1, 2

EPILOG = """\
examples:
  albert-edge validate pipelines.yaml
  albert-edge list pipelines.yaml
  albert-edge run pipelines.yaml --pipeline smoke
  albert-edge run pipelines.yaml --pipeline sst2-mobile --from quantize
  albert-edge show pipelines.yaml --pipeline sst2-mobile
  albert-edge bench .albert-edge/runs/smoke-latest --device local
  albert-edge report .albert-edge/runs/smoke-latest
  albert-edge device setup qemu-aarch64
  albert-edge sweep pipelines.yaml -p sst2-mobile --space sweeps/sst2-mobile-space.yaml --pick

Artifacts are cached in ./.albert-edge (or $ALBERT_EDGE_CACHE); a re-run reuses every
completed stage. Exit codes: 0 ok, 1 a stage or the accuracy budget failed, 2 bad input.
"""


def _add_pipeline_args(p: argparse.ArgumentParser, need_pipeline: bool = True) -> None:
    p.add_argument("file", nargs="?", default="pipelines.yaml", help="the pipelines file (default: pipelines.yaml)")
    if need_pipeline:
        p.add_argument("--pipeline", "-p", required=True, help="name of the pipeline in the file (see `albert-edge list`)")
    p.add_argument("--cache-dir", type=Path, default=None, help="artifact cache (default: ./.albert-edge or $ALBERT_EDGE_CACHE)")


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error (usage is one `--help` away), still exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# What `clean --all` may find in a cache directory; anything else means the path is not one.
CACHE_ENTRIES = {"artifacts", "runs"}


def _cache_root(args: argparse.Namespace) -> Path:
    """The cache directory (it may not exist yet); a path that is a file is bad input."""
    root = args.cache_dir or default_cache_dir()
    if root.exists() and not root.is_dir():
        raise ConfigError("--cache-dir", f"{root} is not a directory")
    return root


def cmd_validate(args: argparse.Namespace) -> int:
    from albert_edge.config import validate_file

    pipes = validate_file(args.file)
    for p in pipes:
        print(f"ok  {p.name}: {len(p.steps)} steps ({' -> '.join(s.id for s in p.steps)})")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from albert_edge.config import validate_file
    from albert_edge.registry import STAGE_MODULES, get_stage

    for p in validate_file(args.file):
        flag = "  [random weights]" if p.random_weights else ""
        print(f"{p.name:28s} {p.model:22s} {p.description}{flag}")
    if args.stages:
        print("\nstages:")
        for name in STAGE_MODULES:
            print(f"  {name:14s} {get_stage(name).doc}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from albert_edge.config import load_pipeline
    from albert_edge.runner import cached_artifacts

    pipe = load_pipeline(args.file, args.pipeline)
    root = _cache_root(args)
    print(f"pipeline {pipe.name}: model {pipe.model}, task {pipe.task.name}, seed {pipe.seed}, budget {pipe.budget.max_accuracy_drop}")
    done, why = cached_artifacts(pipe, root, verify=not args.no_verify)
    for step, art in done:
        metrics = {k: v for k, v in art.metrics.items() if not isinstance(v, (list, dict))}
        print(f"  {step.id:16s} {art.path}\n  {'':16s} {json.dumps(metrics)}")
        if args.config:
            print(f"  {'':16s} config {json.dumps(step.config_dict())}")
    if why:
        print(f"  not built: {why}")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from albert_edge.config import load_pipeline
    from albert_edge.runner import run_pipeline

    pipe = load_pipeline(args.file, args.pipeline)
    ids = [s.id for s in pipe.steps]
    for opt in ("from_step", "until"):
        val = getattr(args, opt)
        if val and val not in ids:
            raise ConfigError(f"--{opt.replace('_step', '')}", f"no step {val!r} in {pipe.name}", f"steps: {', '.join(ids)}")
    result = run_pipeline(pipe, _cache_root(args), from_step=args.from_step, force=args.force, until=args.until, verbose=args.verbose)
    print(f"run log: {result.run_dir / 'run.log'}", file=sys.stderr)
    return result.exit_code


def cmd_clean(args: argparse.Namespace) -> int:
    from benchmarks.devices.scratch import sweep

    for p in sweep():  # temp dirs of benchmarks that were killed
        print(f"removed {p}")
    root = _cache_root(args)
    if not root.exists():
        print(f"nothing to clean at {root}")
        return EXIT_OK
    if args.all:
        strangers = sorted(p.name for p in root.iterdir() if p.name not in CACHE_ENTRIES)
        if strangers:
            raise ConfigError(
                "--cache-dir",
                f"{root} does not look like an albert-edge cache (it holds {', '.join(strangers[:3])}); not removing it",
                "point --cache-dir at the cache itself",
            )
    from albert_edge.artifacts import ArtifactStore

    store = ArtifactStore(root / "artifacts")
    live = store.live_leases()
    if args.all:
        if live:  # pulling the cache from under a live run would fail it or leave half its work
            owners = ", ".join(f"{p.name} ({o.describe() if o else 'starting'})" for p, o in live)
            print(f"not removing {root}: runs are building in it: {owners}", file=sys.stderr)
            return 1
        shutil.rmtree(root)
        print(f"removed {root}")
        return EXIT_OK
    n = store.clean_tmp()
    print(f"removed {n} half-written artifact(s) of runs that are gone" + (f"; {len(live)} live build(s) left alone" if live else ""))
    for d in store.clean_quarantine():
        print(f"removed {d}")
    return EXIT_OK


def _lazy(module: str, func: str) -> Callable[[argparse.Namespace], int]:
    def call(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), func)(args)

    return call


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="albert-edge",
        description=(
            "Distill, prune, int8-quantize, export (ONNX, TFLite) and benchmark ALBERT text classifiers for edge devices, from "
            "one pipelines.yaml."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"albert-edge {__import__('albert_edge').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="run a pipeline, reusing cached stages",
        description=(
            "Run the named pipeline stage by stage. Completed stages are reused from the cache (content-addressed by config, "
            "inputs and code version); a killed run resumes at the stage in flight."
        ),
    )
    _add_pipeline_args(p)
    p.add_argument("--from", dest="from_step", metavar="STEP", help="rebuild this step and every step after it")
    p.add_argument("--until", metavar="STEP", help="stop after this step")
    p.add_argument("--force", action="store_true", help="rebuild every step")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks in the log")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "validate",
        help="check a pipelines file without running anything",
        description=(
            "Validate every pipeline: stage names, parameter types and values, files that must exist, cross-stage constraints. "
            "Errors name the YAML path of the bad key."
        ),
    )
    _add_pipeline_args(p, need_pipeline=False)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser(
        "list",
        help="list pipelines (and stages)",
        description="List the pipelines in a file with their model source; --stages also lists every registered stage.",
    )
    _add_pipeline_args(p, need_pipeline=False)
    p.add_argument("--stages", action="store_true", help="also list the stages and what they do")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "show",
        help="show a pipeline's cached artifacts and metrics",
        description="For each step: the cached artifact directory and its metrics, or why it would be rebuilt.",
    )
    _add_pipeline_args(p)
    p.add_argument("--config", action="store_true", help="print each step's resolved config")
    p.add_argument("--no-verify", action="store_true", help="skip sha256 verification (faster)")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "clean",
        help="remove half-written, corrupt and replaced artifacts (or everything)",
        description=(
            "Remove leftovers of interrupted runs, artifacts that failed their sha256 check, and artifacts replaced by "
            "--force/--from; --all removes the whole cache."
        ),
    )
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--all", action="store_true", help="remove the whole cache directory")
    p.set_defaults(func=cmd_clean)

    p = sub.add_parser(
        "bench",
        help="benchmark a bundle on a device",
        description=(
            "Measure latency (p50/p90/p99), load time, peak RSS, size and accuracy of every model file in a bundle, one fresh "
            "process per model, on the device given."
        ),
    )
    p.add_argument("bundle", type=Path, help="a bundle directory, or a run directory holding one")
    p.add_argument(
        "--device",
        default="local",
        help="local | ssh://user@host[:port] | adb[:serial] | qemu-aarch64[:cpu, e.g. cortex-a53, neoverse-n1, max,sme=off]",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50, help="timed runs per row after warm-up")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--seq-len", type=int, action="append", help="fixed sequence lengths to time (repeatable; default 128)")
    p.add_argument("--runtimes", default="", help="comma list: onnxruntime,litert,tflite-runtime,torch (default: all available)")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=(
            "where results.jsonl goes, never inside a cached artifact (default: RUN/bench for a run directory, CACHE/runs/bench-ARTIFACT "
            "for a cached bundle)"
        ),
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="per-row limit: a file x runtime that runs longer is stopped and reported (default 900)",
    )
    p.add_argument("--benchmark-model", default=None, help="adb: path of LiteRT's benchmark_model binary")
    p.add_argument(
        "--accuracy-rows",
        type=int,
        default=None,
        metavar="N",
        help="eval rows to predict: a seeded sample (default 200 under emulation, all elsewhere; 0: all)",
    )
    p.add_argument("--accuracy-seed", type=int, default=0, help="which rows the --accuracy-rows sample holds")
    p.add_argument("--no-device-tests", action="store_true", help="do not run the bundle's golden-vector suite on the device")
    p.set_defaults(func=_lazy("benchmarks.harness", "cli_bench"))

    p = sub.add_parser(
        "report",
        help="write report.md and report.html from benchmark results",
        description=(
            "Write report.md, a self-contained report.html with plots (Pareto of accuracy vs p50 latency, size bars, latency "
            "distributions), results.jsonl and results.csv."
        ),
    )
    p.add_argument("run", type=Path, help="a run directory, a bench artifact, or a results.jsonl")
    p.add_argument("--out", type=Path, default=None, help="output directory (default: beside the results)")
    p.set_defaults(func=_lazy("benchmarks.report", "cli_report"))

    p = sub.add_parser(
        "sweep",
        help="search compression recipes (Ray Tune + Optuna): Pareto front, report, pick",
        description="Run trials of a pipeline with the values of a search space (grid, random, or NSGA-II through Ray Tune's "
        "OptunaSearch), sharing the artifact cache; measure each trial's bundled file with no build running on "
        "the machine; write sweeps/NAME/trials.jsonl, pareto.json and report.md. A rerun resumes.",
    )
    _add_pipeline_args(p)
    p.add_argument("--space", type=Path, required=True, help="the search space YAML file (see sweeps/sst2-mobile-space.yaml)")
    p.add_argument(
        "--address",
        default=None,
        help="an existing Ray cluster (e.g. 10.0.0.5:6379 or auto); default: a local Ray started and stopped here",
    )
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: max_concurrent x cpus_per_trial)")
    p.add_argument("--out", type=Path, default=None, help="where sweep directories go (default: ./sweeps)")
    p.add_argument("--plan", action="store_true", help="validate the space against the pipeline and list the trials; run nothing")
    p.add_argument("--report-only", action="store_true", help="rewrite pareto.json and the report from trials.jsonl; run nothing")
    p.add_argument("--pick", action="store_true", help="name the best trial under the constraints, copy its bundle, print its path")
    p.add_argument("--rounds", type=int, default=0, metavar="N",
                   help="re-time the front and the hand-tuned baseline in N interleaved rounds (rounds.jsonl) and judge the front "
                   "against the baseline on its worst round; with --report-only, re-times without training")
    for flag, what in (("max-accuracy-drop", "points of validation accuracy below the teacher"), ("max-p50-ms", "p50 latency, ms"),
                       ("max-size-mb", "file size, MB"), ("max-rss-mb", "peak RSS, MB")):
        p.add_argument(f"--{flag}", type=float, default=None, help=f"constraint for --pick: {what} (overrides the space file)")
    p.set_defaults(func=_lazy("albert_edge.sweep", "cli_sweep"))

    p = sub.add_parser(
        "device",
        help="prepare a device (qemu-aarch64 sysroot)",
        description=(
            "`albert-edge device setup qemu-aarch64` builds an emulated arm64 Linux sysroot with Python, numpy, onnxruntime and "
            "ai-edge-litert once and caches it."
        ),
    )
    dsub = p.add_subparsers(dest="device_command", metavar="ACTION")
    ds = dsub.add_parser("setup", help="build and cache a device environment")
    ds.add_argument("name", choices=["qemu-aarch64"])
    ds.add_argument("--force", action="store_true", help="rebuild even if cached")
    ds.set_defaults(func=_lazy("benchmarks.devices.qemu", "cli_setup"))
    return parser


def quiet_libraries() -> None:
    """Library chatter (progress bars while loading weights, torchao notices) hides our own output."""
    import logging
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")
    logging.getLogger("torchao").setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        what = (
            "an action: setup" if args.command == "device" else "a command: run, validate, list, show, clean, bench, report, sweep, device"
        )
        print(f"error: give {what} (see albert-edge --help)", file=sys.stderr)
        return EXIT_INPUT
    try:
        return int(args.func(args) or 0)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError, PermissionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted; completed stages are cached, rerun to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
