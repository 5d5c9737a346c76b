"""A shared cache under hostile but fair use: runs sharing it, killed owners, forged manifests,
a timing-dependent file set, file permissions, and `clean` beside a live run."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from albert_edge.cli import main
from tests.conftest import TINY_YAML, TWO_STEP_TEMPLATE, run_yaml, write_yaml

TWO_STEP = TWO_STEP_TEMPLATE
ONE_STEP = TWO_STEP.split("      - finetune: {id: slow")[0]


def _start(y: Path, cache: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    return subprocess.Popen([sys.executable, "-m", "albert_edge", "run", str(y), "-p", "two", "--cache-dir", str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _read_until(proc: subprocess.Popen, marker: str, timeout: float = 180) -> str:
    seen = ""
    deadline = time.time() + timeout
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen += line
        if marker in line or not line:
            break
    assert marker in seen, seen
    return seen


def _builds(logs: list[str], step: str) -> int:
    return sum(log.count(f"{step}: running (") for log in logs)


def test_two_runs_on_one_cache_build_each_stage_once(tmp_path):
    """The second run starts while the first is mid-stage: its start-up cleanup must not delete the
    first run's in-flight directory, and it waits for the stage instead of building it again."""
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP.replace("SLOW", "24"))  # ~20 s: longer than the second run's start-up
    cache = tmp_path / "cache"
    a = _start(y, cache)
    a_log = _read_until(a, "slow: running")
    lease_files = list((cache / "artifacts" / "leases").glob("slow-*.lease"))
    assert lease_files and json.loads(lease_files[0].read_text())["pid"] == a.pid
    b = _start(y, cache)
    b_out, _ = b.communicate(timeout=600)
    a_rest, _ = a.communicate(timeout=600)
    a_log += a_rest
    assert a.returncode == 0, a_log
    assert b.returncode == 0, b_out
    assert _builds([a_log, b_out], "teacher") == 1 and _builds([a_log, b_out], "slow") == 1, (a_log, b_out)
    assert "slow: waiting for pid" in b_out and "slow: reused" in b_out
    arts = cache / "artifacts"
    assert not list((arts / "tmp").iterdir()) and not list((arts / "leases").glob("*.lease"))
    created = {json.loads((d / "manifest.json").read_text())["created"] for d in arts.glob("slow-*")}
    assert len(created) == 1
    assert len({p.name for p in (cache / "runs").iterdir() if not p.is_symlink()}) == 2  # each run has its own log


def test_runs_started_together_both_succeed(tmp_path):
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP.replace("SLOW", "2"))
    cache = tmp_path / "cache"
    procs = [_start(y, cache), _start(y, cache)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert _builds(outs, "teacher") == 1 and _builds(outs, "slow") == 1, outs


def test_sigkilled_owners_lease_is_taken_over(tmp_path):
    # long enough that the kill 1 s after "running" always lands mid-build, on any machine
    y = write_yaml(tmp_path / "p.yaml", TWO_STEP.replace("SLOW", "40"))
    cache = tmp_path / "cache"
    a = _start(y, cache)
    _read_until(a, "slow: running")
    time.sleep(1.0)
    a.send_signal(signal.SIGKILL)
    a.wait(timeout=30)
    leases = cache / "artifacts" / "leases"
    assert [json.loads(f.read_text())["pid"] for f in leases.glob("*.lease")] == [a.pid]  # left behind by the dead owner
    res = run_yaml(y, "two", cache)
    assert [s.status for s in res.steps] == ["reused", "built"]
    assert not list(leases.glob("*.lease")) and not list((cache / "artifacts" / "tmp").iterdir())


def test_lease_waits_for_a_live_holder_and_takes_over_dead_ones(tmp_path):
    from albert_edge.lease import LeaseTimeout, Owner, acquire, is_stale, try_acquire

    path = tmp_path / "k.lease"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from albert_edge.lease import try_acquire\n"
        f"lease = try_acquire(Path({str(path)!r})); print('held' if lease else 'busy', flush=True); time.sleep(120)")],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert try_acquire(path) is None  # live holder on this machine
        with pytest.raises(LeaseTimeout, match=f"pid {holder.pid}"):
            acquire(path, what="k", log=logging.getLogger("test"), wait=0.5)
    finally:
        holder.kill()
        holder.wait()
    lease = try_acquire(path)  # its owner is dead: taken over at once
    assert lease is not None and lease.held()
    lease.release()
    assert not path.exists()
    # another machine's lease: judged by its heartbeat, by the storage's clock
    other = Owner("elsewhere", "elsewhere/boot/ns", 1, "", "tok", time.time())
    path.write_text(other.dump())
    assert not is_stale(path, other) and try_acquire(path) is None
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert is_stale(path, other)
    lease = try_acquire(path)
    assert lease is not None
    lease.release()


def test_cleanup_and_clean_leave_a_live_builds_directory(tmp_path):
    from albert_edge.artifacts import ArtifactStore

    cache = tmp_path / "cache"
    store = ArtifactStore(cache / "artifacts")
    lease = store.lease("step", "k" * 64, log=logging.getLogger("test"))
    live = store.new_tmp("step", "k" * 64, lease)
    (live / "weights.bin").write_bytes(b"in flight")
    dead = cache / "artifacts" / "tmp" / f"other-{'0' * 16}~deadbeef"
    dead.mkdir()
    (cache / "artifacts" / "replaced" / "x").mkdir(parents=True)
    assert store.clean_tmp() == 1 and live.is_dir() and not dead.exists()
    assert main(["clean", "--cache-dir", str(cache)]) == 0
    assert live.is_dir() and not (cache / "artifacts" / "replaced").exists()
    assert main(["clean", "--all", "--cache-dir", str(cache)]) == 1 and live.is_dir()  # refuses while a run builds
    lease.release()
    assert store.clean_tmp() == 1 and not live.exists()


def test_forged_metric_in_a_manifest_is_detected_and_rebuilt(tmp_path):
    y = write_yaml(tmp_path / "p.yaml", ONE_STEP)
    cache = tmp_path / "cache"
    first = run_yaml(y, "two", cache)
    mpath = first.steps[0].artifact.path / "manifest.json"
    m = json.loads(mpath.read_text())
    m["metrics"]["accuracy"] = 0.99
    mpath.write_text(json.dumps(m, indent=2, sort_keys=True))
    again = run_yaml(y, "two", cache)
    assert [s.status for s in again.steps] == ["built"]
    assert again.steps[0].metrics["accuracy"] == first.steps[0].metrics["accuracy"] != 0.99
    assert "manifest.json no longer matches its sha256" in (again.run_dir / "run.log").read_text()
    # an artifact written before manifests carried a digest: rebuilt, with the reason
    (again.steps[0].artifact.path / "manifest.sha256").unlink()
    third = run_yaml(y, "two", cache)
    assert [s.status for s in third.steps] == ["built"]
    assert "older albert-edge" in (third.run_dir / "run.log").read_text()


EXPORT = """\
  tiny-export:
    model: "config:tiny"
    stages:
      - finetune: {id: teacher, train: {epochs: 3, batch_size: 32, lr: 3.0e-3, evals_per_epoch: 1}}
      - export_onnx: {id: export, parity_rows: 16, timing_runs: 3}
"""


def test_onnx_file_set_does_not_depend_on_a_timing(tmp_path, tiny_cache, tiny_teacher, monkeypatch):
    """Two builds under one key, one timing the optimised graph faster and one slower, write the
    same file set: what downstream stages measured under that key is what the artifact holds."""
    import export.onnx as ex

    y = write_yaml(tmp_path / "p.yaml", TINY_YAML + EXPORT)
    file_sets = []
    for opt_ms in (1.0, 100.0):
        def fake(path, level, *, opt_ms=opt_ms, **_kw):
            return opt_ms if path.name == "model.opt.onnx" else 10.0

        monkeypatch.setattr(ex, "time_ort_level", fake)
        res = run_yaml(y, "tiny-export", tiny_cache, from_step="export")
        assert res.exit_code == 0, res.error
        art = res.steps[-1].artifact
        file_sets.append((art.key, sorted(art.manifest["files"]), [v["name"] for v in art.variants()]))
    assert file_sets[0] == file_sets[1]


def test_tflite_files_get_the_same_permissions_as_other_files(tmp_path):
    from export.tflite_compact import compact_tflite
    from tests.test_parity import _tflite

    src = _tflite(tmp_path / "add.tflite")
    dst = tmp_path / "out" / "model.tflite"
    dst.parent.mkdir()
    compact_tflite(src, dst)
    plain = dst.parent / "plain.json"
    plain.write_text("{}")
    assert stat.S_IMODE(dst.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_show_and_other_readers_never_move_an_artifact(tmp_path):
    """`show`, compare and the seed spread read the cache: an artifact they cannot verify is
    reported, and only a run (holding the key's lease) moves it aside."""
    import json as _json

    from albert_edge.artifacts import ArtifactStore
    from albert_edge.config import load_pipeline
    from albert_edge.registry import get_stage
    from albert_edge.runner import cache_key, cached_artifacts
    from tests.conftest import TINY_YAML, write_yaml

    pipe = load_pipeline(write_yaml(tmp_path / "p.yaml", TINY_YAML), "tiny")
    step = pipe.steps[0]
    key = cache_key(get_stage(step.stage), step, pipe, {"model": None})  # finetune's optional input, absent
    d = ArtifactStore(tmp_path / "cache" / "artifacts").dir_for(step.id, key)
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(_json.dumps({"key": key}))
    done, why = cached_artifacts(pipe, tmp_path / "cache")
    assert done == [] and "manifest.sha256" in why
    assert d.is_dir() and not (tmp_path / "cache" / "artifacts" / "corrupt").exists()
