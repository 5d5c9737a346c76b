"""albert-edge side by side with the tools users would pick instead, on the same teacher and the
same pruned student, measured with albert-edge's own harness.

Peers (each its own venv, made by benchmarks/peers/setup.sh; each recipe runs there, in a
subprocess, and writes its files plus peer.json with the tool's wall time):
  optimum     HF Optimum: export, ORTOptimizer (highest CPU level that runs), ORTQuantizer dynamic
              int8 for this host's ISA (and arm64, kept for the ARM device)
  olive       Microsoft Olive: its BERT CPU workflow (olive/teacher.json, olive/student.json)
  executorch  ExecuTorch: XNNPACK delegate, fp32 and pt2e dynamic int8 (.pte, ExecuTorch runtime)
  aiedge      Google AI Edge: litert-torch at one fixed shape (128) + ai-edge-quantizer dynamic int8

Measured beside them: the teacher in PyTorch eager (the accuracy reference), albert-edge's fp32
student ONNX (what the ORT peers start from) and albert-edge's shipped int8 files (the bundle).
Every file runs in its own fresh process (benchmarks/measure.py; .pte files in the executorch
venv's Python, everything else in this one, so .onnx and .tflite files of every tool run on the
same ONNX Runtime and LiteRT), on the bundle's eval rows, in --rounds interleaved rounds. Checks:
  (1) each shipped file >= 3x faster at real lengths than the fastest peer file of the teacher,
      within 1.0 point of the teacher (lower end of the paired 95 % interval)
  (2) each shipped int8 file at least as fast at real lengths as the fastest peer int8 file of the
      same fp32 student, at equal or better accuracy
A target holds when its worst round holds. Artifacts are read, never written: the recipes get
copies of the teacher/student directories and the student ONNX.

With --arm DEVICE (e.g. qemu-aarch64), the peers' ARM builds (Optimum's arm64 int8, the .tflite and
.pte files) and the shipped files also run there on a seeded sample of the eval rows: accuracy and
agreement with this host's run of the same file (latencies under emulation are not reported).

The machine-wide lock of albert_edge.nodelock is honoured: conversions and ARM runs hold it
shared (as sweep builds do), the timed rounds hold it exclusively, so a peer run can share the
machine with `albert-edge sweep` and neither disturbs the other's latency figures.

    python benchmarks/peers/run.py -p sst2-mobile [--cache-dir DIR] [--rounds 3] [--out benchmarks/results/peers]
    python benchmarks/peers/run.py -p sst2-mobile --rounds 3 --arm qemu-aarch64
    python benchmarks/peers/run.py -p smoke --cache-dir /tmp/peers-cache --rounds 1 --runs 10 --min-secs 0.2
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from albert_edge import nodelock  # noqa: E402
from albert_edge.cli import quiet_libraries  # noqa: E402
from albert_edge.config import load_pipeline  # noqa: E402
from albert_edge.paths import default_cache_dir  # noqa: E402
from albert_edge.runner import cached_artifacts  # noqa: E402
from benchmarks.devices.local import LocalDevice  # noqa: E402
from benchmarks.harness import BenchConfig, Target, benchmark, bundle_targets, find_bundle, flag_rows, run_on_device  # noqa: E402
from benchmarks.hoststamp import describe  # noqa: E402
from benchmarks.peers import common  # noqa: E402
from benchmarks.provenance import run_stamp  # noqa: E402


class VenvDevice(LocalDevice):
    """This machine, with children run by another venv's Python (ExecuTorch's runtime lives
    only in its peer venv)."""

    def __init__(self, python: Path, name: str = "local") -> None:
        super().__init__(name)
        self.python_path = str(python)

    def run_python(self, args: list[str], timeout: float) -> tuple[int, str, str]:
        from benchmarks.devices.base import run_command

        return run_command([self.python_path, *args], timeout)


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _copy_model(src: Path, dest: Path) -> Path:
    """A private copy of a model directory: recipes never touch the cache."""
    if not dest.is_dir():
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        tmp.rename(dest)
    return dest


def convert(peer: str, role: str, model_dir: Path, onnx: Path | None, out: Path, isa: str, key: str, threads: int, timeout: float,
            reconvert: bool) -> tuple[list[common.PeerFile], dict[str, Any]]:
    """Run one peer's recipe in its venv (skipped when an earlier run with the same inputs and
    recipe wrote peer.json); returns its files and record."""
    py = common.venv_python(peer)
    if not py.is_file():
        return [], {"ok": False, "errors": [{"step": "setup", "error": f"no venv: run `benchmarks/peers/setup.sh {peer}`"}]}
    stamp = out / "inputs.key"
    if not reconvert and stamp.is_file() and stamp.read_text() == key and (out / "peer.json").is_file():
        files, data = common.read_peer_result(out)
        data["reused"] = True
        return files, data
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    argv = [str(py), str(common.recipe_path(peer)), "--role", role, "--model-dir", str(model_dir), "--out", str(out), "--isa", isa]
    if onnx is not None:
        argv += ["--onnx", str(onnx)]
    env = {**os.environ, "PYTHONPATH": str(common.REPO_ROOT), "PEER_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    print(f"  {peer}/{role}: converting ({' '.join(argv[1:3])} ...)", file=sys.stderr, flush=True)
    t0 = time.time()
    with (out / "recipe.log").open("w") as log, nodelock.building():  # a conversion is a build: never beside a measurement
        try:
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False)  # noqa: S603
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = 124
    files, data = common.read_peer_result(out)
    data["returncode"], data["subprocess_s"] = rc, round(time.time() - t0, 1)
    if rc != 0 and not data.get("errors"):
        tail = (out / "recipe.log").read_text(errors="replace").strip().splitlines()[-3:]
        data.setdefault("errors", []).append({"step": "recipe", "error": f"exited {rc}: {' | '.join(tail)[:400]}"})
    if data.get("files"):
        stamp.write_text(key)
    return files, data


ARM_FORMATS = ("tflite", "pte")  # mobile formats a peer ships for phones: run on the ARM device too


def arm_config(device: str, rows: int | None, timeout_s: float = 900.0) -> BenchConfig:
    """Accuracy and agreement on an arm64 device: real lengths, a seeded sample of rows, a few
    runs (under emulation a latency says nothing about a phone); `timeout_s` per file."""
    return BenchConfig(
        devices=(device,), threads=(1,), runs=3, min_secs=0.0, warmup_min_secs=0.0, seq_lens=(128,),
        runtimes=("onnxruntime", "litert", "executorch"), accuracy=True, accuracy_seq_lens=(), accuracy_rows=rows,
        real_lengths=False, device_tests=False, timeout_s=timeout_s,
    )


def measure_round(targets: list[tuple[Target, Path | None]], inputs: Path, cfg: BenchConfig, extra: dict[str, Any],
                  answers: dict[tuple[Any, Any], dict[str, Any]] | None) -> list[dict[str, Any]]:
    """One interleaved round: every file in its own fresh process, in order. With `answers`
    (round 1's rows), a timing-only round carries round 1's predictions for the same file."""
    rows: list[dict[str, Any]] = []
    local = LocalDevice()
    for t, py in targets:
        got = run_on_device(VenvDevice(py) if py else local, [t], inputs, cfg, extra)
        for row in got:
            if answers is not None and not row.get("error"):
                row.update({k: v for k, v in answers.get((row.get("variant"), row.get("seq_len")), {}).items()
                            if row.get(k) is None and v is not None})
            if row.get("error"):
                print(f"    {t.name}: {row['error'][:200]}", file=sys.stderr)
        rows += got
    return rows


def timed_rounds(targets: list[tuple[Target, Path | None]], inputs: Path, cfg: BenchConfig, timing_only: BenchConfig,
                 stamp: dict[str, Any], n: int) -> list[list[dict[str, Any]]]:
    """`n` interleaved rounds, each with this machine's lock held exclusively (no sweep build or
    other holder runs meanwhile); round 1 predicts the eval rows, later ones only time."""
    rounds: list[list[dict[str, Any]]] = []
    answers: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in range(1, n + 1):
        print(f"round {r}/{n}: {len(targets)} files", file=sys.stderr, flush=True)
        with nodelock.measuring():
            rows = measure_round(targets, inputs, cfg if r == 1 else timing_only, {**stamp, "bench": "peers", "round": r},
                                 answers if r > 1 else None)
        if r == 1:
            answers.update({(row.get("variant"), row.get("seq_len")): row for row in rows})
        rounds.append(flag_rows(rows, cfg.cv_threshold))
    return rounds


def _find(done: list[tuple[Any, Any]], pipe: Any) -> dict[str, Any]:
    """The artifacts the comparison reads, by what they are: teacher model, the fp32 student
    (the model export_onnx consumed), its fp32 ONNX, and the bundle."""
    arts = {s.id: a for s, a in done}
    teacher = arts.get(pipe.teacher or "teacher")
    onnx_i = next((i for i, (s, _) in enumerate(done) if s.stage == "export_onnx"), None)
    student = next((a for _, a in reversed(done[:onnx_i]) if a.kind == "model" and a is not teacher), None) if onnx_i is not None else None
    onnx_art = done[onnx_i][1] if onnx_i is not None else None
    onnx = None
    if onnx_art is not None:
        v = next((v for v in onnx_art.variants() if v.get("precision") == "fp32" and not v.get("ort_optimization")), None)
        onnx = onnx_art.path / v["file"] if v else None
    bundle = next((a for _, a in reversed(done) if a.kind == "bundle"), None)
    return {"teacher": teacher, "student": student, "onnx_art": onnx_art, "onnx": onnx, "bundle": bundle}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--file", default="pipelines.yaml")
    p.add_argument("-p", "--pipeline", default="sst2-mobile")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/peers"), help="results go to OUT/PIPELINE/")
    p.add_argument("--work", type=Path, default=None, help="peer model files (default .peers/work/PIPELINE; reused when inputs match)")
    p.add_argument("--peers", default=",".join(common.PEERS), help=f"comma list of {', '.join(common.PEERS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--min-secs", type=float, default=2.0)
    p.add_argument("--convert-timeout", type=float, default=3600.0, help="seconds per recipe run")
    p.add_argument("--reconvert", action="store_true", help="run every recipe again even if its inputs did not change")
    p.add_argument("--convert-only", action="store_true",
                   help="run the recipes and stop (measure later, on a quiet machine: conversions are reused)")
    p.add_argument("--arm", default="", metavar="DEVICE",
                   help="also run the ARM builds and the shipped files on this arm64 device (qemu-aarch64[:CPU], ssh://..., adb:...) "
                   "for accuracy and agreement with this host")
    p.add_argument("--arm-rows", type=int, default=None, help="eval rows predicted on the ARM device (default: 200 under emulation)")
    p.add_argument("--arm-timeout", type=float, default=900.0,
                   help="seconds per file on the ARM device (emulating a fixed-width 128 teacher takes over 10 minutes)")
    args = p.parse_args(argv)
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    bad = [x for x in peers if x not in common.PEERS]
    if bad or args.rounds < 1:
        p.error(f"unknown peer(s) {bad}" if bad else "--rounds must be at least 1")
    if args.arm_timeout <= 0:
        p.error("--arm-timeout must be positive")
    quiet_libraries()
    pipe = load_pipeline(args.file, args.pipeline)
    cache = args.cache_dir or default_cache_dir()
    done, why = cached_artifacts(pipe, cache, verify=True)
    found = _find(done, pipe)
    missing = [k for k in ("teacher", "student", "onnx", "bundle") if found[k] is None]
    if missing:
        print(
            f"error: {', '.join(missing)} not in {cache}: "
            f"run `albert-edge run {args.file} -p {args.pipeline}` first ({why or 'not built'})",
            file=sys.stderr,
        )
        return 2
    bundle = find_bundle(found["bundle"].path)
    work = (args.work or common.REPO_ROOT / ".peers" / "work" / args.pipeline).resolve()
    inputs_dir = work / "inputs"
    teacher_dir = _copy_model(found["teacher"].model_dir, inputs_dir / f"teacher-{found['teacher'].key[:16]}")
    student_dir = _copy_model(found["student"].model_dir, inputs_dir / f"student-{found['student'].key[:16]}")
    onnx = inputs_dir / f"student-{found['onnx_art'].key[:16]}.onnx"
    if not onnx.is_file():
        shutil.copyfile(found["onnx"], onnx)
    isa = common.host_isa(common.read_cpu_flags())
    print(f"host ISA for ORT configs: {isa}; peer files under {work}", file=sys.stderr)

    # ---- conversions (each peer in its own venv, in a subprocess)
    systems: dict[str, dict[str, Any]] = {}
    targets: list[tuple[Target, Path | None]] = []
    arm_targets: list[Target] = []
    notes: dict[str, str] = {}
    conversions: dict[str, Any] = {}
    systems["teacher/torch-eager"] = {"kind": "teacher-reference", "tool": "torch", "role": "teacher", "precision": "fp32",
                                      "size_bytes": None, "tool_s": None}
    targets.append((Target("teacher/torch-eager", "torch", "fp32", [found["teacher"].model_dir], {}), None))
    for peer in peers:
        recipe_key = _digest(common.recipe_path(peer).parent, common.PEER_DIR / "recipe_common.py")
        for role, model_dir, role_onnx in (("teacher", teacher_dir, None), ("student", student_dir, onnx)):
            key = f"{found[role].key}:{found['onnx_art'].key if role == 'student' else ''}:{recipe_key}"
            files, data = convert(peer, role, model_dir, role_onnx, work / peer / role, isa, key, args.threads, args.convert_timeout,
                                  args.reconvert)
            conversions[f"{peer}/{role}"] = data
            if not files:
                systems[f"{peer}/{role}"] = {
                    "kind": "peer",
                    "tool": peer,
                    "role": role,
                    "precision": "-",
                    "error": common.failure_text(data),
                }
                continue
            for f in files:
                if f.arm_only or f.format in ARM_FORMATS:
                    arm_targets.append(Target(f.system, f.format, f.precision, [f.path], {}))
                if f.arm_only:  # built for the ARM device: not timed on this host
                    continue
                systems[f.system] = {
                    "kind": "peer",
                    "tool": peer,
                    "role": role,
                    "precision": f.precision,
                    "size_bytes": f.path.stat().st_size,
                    "tool_s": f.tool_s,
                    "format": f.format,
                    "seq_len": f.seq_len,
                }
                targets.append((Target(f.system, f.format, f.precision, [f.path], {}),
                                common.venv_python(peer) if f.format == "pte" else None))
        notes[peer] = "; ".join(
            sorted({n for r in ("teacher", "student") for n in (conversions.get(f"{peer}/{r}") or {}).get("notes") or []})
        )
        vers = (conversions.get(f"{peer}/teacher") or {}).get("versions") or {}
        if vers:
            notes[peer] += ("; " if notes[peer] else "") + "versions " + ", ".join(f"{k} {v}" for k, v in vers.items() if v)
        for r in ("teacher", "student"):
            data = conversions.get(f"{peer}/{r}") or {}
            if data.get("errors"):  # a recipe that still wrote files only stepped around these
                word = "steps that failed (files written anyway)" if data.get("files") else "FAILED"
                notes[peer] += f"; {peer}/{r} {word}: {common.failure_text(data)}"
    student_key = "albert-edge/student/onnx-fp32"
    systems[student_key] = {
        "kind": "albert-edge",
        "tool": "albert-edge",
        "role": "student",
        "precision": "fp32",
        "size_bytes": onnx.stat().st_size,
        "tool_s": None,
    }
    targets.append((Target(student_key, "onnx", "fp32", [found["onnx"]], {}), None))
    for t in bundle_targets(bundle):
        if t.precision.startswith("int8") and not t.problem:
            label = f"albert-edge/shipped/{t.name}"
            systems[label] = {
                "kind": "shipped",
                "tool": "albert-edge",
                "role": "student",
                "precision": t.precision,
                "size_bytes": t.size_bytes,
                "tool_s": None,
                "format": t.format,
            }
            targets.append((Target(label, t.format, t.precision, t.files, t.meta, sha256=t.sha256), None))
            arm_targets.append(targets[-1][0])
    systems["teacher/torch-eager"]["size_bytes"] = sum(
        f.stat().st_size
        for f in found["teacher"].model_dir.iterdir()
        if f.suffix in (".safetensors", ".json") and not f.name.startswith(("tokenizer", "special"))
    )

    if args.convert_only:
        print(f"converted: {len(targets)} files ready to measure; rerun without --convert-only to measure them", file=sys.stderr)
        return 0
    keys = {"teacher": found["teacher"].key, "model": found["student"].key, "onnx": found["onnx_art"].key, "bundle": found["bundle"].key}
    stamp = run_stamp(pipe, keys)

    # ---- measurement: interleaved rounds, a fresh process per file
    cfg = BenchConfig(
        devices=("local",),
        threads=(args.threads,),
        runs=args.runs,
        min_secs=args.min_secs,
        seq_lens=(128,),
        batch_sizes=(1,),
        runtimes=("torch", "onnxruntime", "litert", "executorch"),
        accuracy=True,
        accuracy_seq_lens=(128,),
        device_tests=False,
    )
    t0 = time.time()
    # a file's answers do not change between rounds: predict the eval rows in round 1, time in every round
    timing_only = dataclasses.replace(cfg, accuracy=False, accuracy_seq_lens=())
    rounds = timed_rounds(targets, bundle / "eval.npz", cfg, timing_only, stamp, args.rounds)
    arm_rows: list[dict[str, Any]] = []
    if args.arm:  # after the timed rounds: emulation is long, and it holds back any measurement waiting for the machine
        print(f"ARM builds on {args.arm}: {len(arm_targets)} files (accuracy and agreement with this host)", file=sys.stderr, flush=True)
        arm_cfg = arm_config(args.arm, args.arm_rows, args.arm_timeout)
        for t in arm_targets:  # emulation is work, not a measurement: one file at a time, so a waiting measurement gets in between
            with nodelock.building():
                arm_rows += benchmark([t], bundle / "eval.npz", arm_cfg, {**stamp, "bench": "peers-arm"})
        for row in arm_rows:
            if row.get("error"):
                print(f"    {row.get('variant')} on {args.arm}: {str(row['error'])[:200]}", file=sys.stderr)

    tables = [common.summarise(rs, systems) for rs in rounds]
    table = common.median_table(tables)
    checks = common.combine_rounds([common.check_targets(t) for t in tables])
    all_rows = [r for rs in rounds for r in rs]
    machine = next((r.get("stamp") for r in all_rows if r.get("stamp")), {}) or {}
    meta = {
        "machine": describe(machine),
        "host_isa_config": isa,
        "threads": args.threads,
        "rounds": args.rounds,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "measure_seconds": round(time.time() - t0, 1),
        "command": "python benchmarks/peers/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "notes": notes,
        "inputs": {
            "teacher": found["teacher"].path.name,
            "student": found["student"].path.name,
            "onnx": found["onnx_art"].path.name,
            "bundle": found["bundle"].path.name,
        },
        "targets": common.TARGETS,
        **stamp,
    }
    text = common.render(table, checks, meta)
    arm = common.arm_summary(arm_rows)
    if args.arm:
        text += "\n\n" + common.render_arm(arm, args.arm)
    print(text)
    out_dir = args.out / args.pipeline
    out_dir.mkdir(parents=True, exist_ok=True)
    slim = [{k: v for k, v in r.items() if k != "times_ms"} for r in [*all_rows, *arm_rows]]
    (out_dir / "peers.json").write_text(
        json.dumps(
            {"meta": meta, "table": table, "rounds": tables, "checks": checks, "arm": arm,
             "conversions": conversions, "rows": slim},
            indent=2,
            default=str,
        )
    )
    (out_dir / "results.jsonl").write_text("".join(json.dumps(r, default=str) + "\n" for r in slim))
    (out_dir / "peers.md").write_text(f"# {args.pipeline}: albert-edge beside Optimum, Olive, ExecuTorch and AI Edge\n\n{text}\n")
    print(f"\n-> {out_dir / 'peers.md'}, {out_dir / 'peers.json'}", file=sys.stderr)
    return 0 if checks and all(c["ok"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
