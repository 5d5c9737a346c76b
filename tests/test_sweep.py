"""`albert-edge sweep` end to end on a local Ray cluster (head on 127.0.0.1, 2 CPUs: two trial
workers side by side) with a trimmed smoke pipeline (tiny random-weight ALBERT: teacher,
distill, ONNX export, int8, bundle). The tests share one artifact cache and run in order: the
grid sweep builds the teacher once and each student shape once; the fault tests then reuse it.

Faults are injected with the sweep's test hooks ($ALBERT_EDGE_SWEEP_FAULT_DIR): the N-th trial
to start waits, with its pid in a file, until the test has killed what it wants to kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from albert_edge.pareto import dominates, pareto_front
from tests.conftest import write_yaml
from tests.test_sweep_unit import PIPES

pytest.importorskip("ray.tune")

OBJ = ("val_accuracy", "p50_ms", "size_mb")
SPACE = """\
version: 1
sweep:
  name: {name}
  strategy: grid
  baseline: {baseline}
  params:
    distill.student.num_hidden_layers: {layers}
    distill.student.embedding_size: [16, 32]
  objectives: [val_accuracy, p50_ms, size_mb]
  measure: {{files: [onnx-int8-dynamic], threads: 1, runs: 5, min_secs: 0, warmup_min_secs: 0}}
  constraints: {{max_size_mb: 1.0}}
  resources: {{cpus_per_trial: 1, max_concurrent: {concurrent}, max_failures: 1}}
"""
DRIVER_TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """A Ray head started here and stopped here (SIGTERM to `ray start --block`, which stops what it started)."""
    import secrets

    from ray._private.services import resolve_ip_for_localhost

    # Ray 2.60 clusters take a token: give this one its own (the head, this process and the drivers read it)
    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32))
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="ray-sweep-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray_bin = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={tmp}"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ip = resolve_ip_for_localhost("127.0.0.1")  # Ray advertises the node's reachable address for 127.0.0.1
        # up when a fresh driver can connect (the GCS port opens before the node has registered); a
        # child process, because this one imported ray before the token was set and keeps its config
        probe = f"import ray; ray.init(address='{ip}:{port}', logging_level='ERROR', log_to_driver=False); ray.shutdown()"
        deadline = time.time() + 120
        while subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode != 0:
            assert head.poll() is None, "ray start exited"
            assert time.time() < deadline, "the Ray head did not come up in 120 s"
            time.sleep(1)
        yield f"{ip}:{port}"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)  # the group `ray start` leads: only what this fixture started
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("sweep")
    write_yaml(d / "pipelines.yaml", PIPES)
    return d


def _space(work: Path, name: str, layers: str = "[1, 2]", baseline: str = "true", concurrent: int = 2) -> Path:
    return write_yaml(work / f"{name}.yaml", SPACE.format(name=name, layers=layers, baseline=baseline, concurrent=concurrent))


def _driver(work: Path, space: Path, address: str, *extra: str, fault_dir: Path | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    env.pop("ALBERT_EDGE_SWEEP_FAULT_DIR", None)
    if fault_dir is not None:
        env["ALBERT_EDGE_SWEEP_FAULT_DIR"] = str(fault_dir)
    # the machine lock of these sweeps only: another sweep on this machine (a long real one) would
    # hold every measurement here back until its builds end, which is right for it and slow for a test
    env["ALBERT_EDGE_NODE_LOCK_DIR"] = str(work / "node-lock")
    cmd = [sys.executable, "-m", "albert_edge", "sweep", "pipelines.yaml", "-p", "smoke", "--space", str(space),
           "--cache-dir", str(work / "cache"), "--address", address, *extra]
    return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=DRIVER_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"sweep driver did not finish in {DRIVER_TIMEOUT}s:\n{err[-3000:]}")
    return proc.returncode, out, err


def _rows(work: Path, name: str) -> list[dict]:
    path = work / "sweeps" / name / "trials.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _wait_for(cond, what: str, timeout: float = 240.0, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver exited ({proc.returncode}) before {what}:\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _starts(fault: Path) -> list[tuple[str, str]]:
    path = fault / "starts"
    return [tuple(line.split()) for line in path.read_text().splitlines()] if path.is_file() else []


def test_grid_sweep_front_report_pick_and_shared_builds(cluster, work, tmp_path):
    space = _space(work, "grid")
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "hold").write_text("1")  # the first trial waits until a second has started: both then need the teacher at once
    proc = _driver(work, space, cluster, "--pick", fault_dir=fault)
    _wait_for(lambda: len(_starts(fault)) >= 2, "two trials started", proc=proc)
    (fault / "hold").unlink()
    rc, out, err = _finish(proc)
    assert rc == 0, err[-3000:]
    rows = _rows(work, "grid")
    assert sorted(r["trial"] for r in rows if not r["baseline"]) == sorted(
        __import__("albert_edge.sweepspace", fromlist=["x"]).trial_key(v)
        for v in [{"distill.student.num_hidden_layers": a, "distill.student.embedding_size": b} for a in (1, 2) for b in (16, 32)])
    assert len(rows) == 5 and all(r["status"] == "ok" for r in rows), [r.get("error") for r in rows]
    for r in rows:  # every objective measured, selection on validation, stamped like benchmark rows
        assert r["file"] == "onnx-int8-dynamic" and r["p50_ms"] > 0 and r["size_mb"] > 0 and r["rss_peak_mb"] > 0
        assert 0 <= r["val_accuracy"] <= 1 and r["val_rows"] > 0 and r["dev_accuracy"] is not None
        assert r["stamp"]["cpu_model"] is not None and r["run_id"] and r["git_commit"] and r["load_1m_at_measure"] >= 0

    # the front in pareto.json is exactly the non-dominated measured rows
    pareto = json.loads((work / "sweeps/grid/pareto.json").read_text())
    front_ids = {r["trial"] for r in pareto["front"]}
    assert front_ids == {r["trial"] for r in pareto_front(rows, OBJ)} and front_ids
    for r in rows:
        dominated = any(dominates(o, r, OBJ) for o in rows if o is not r)
        assert dominated == (r["trial"] not in front_ids)

    # one teacher, one student per shape: the baseline is shape (1, 16), as is one grid trial
    arts = work / "cache" / "artifacts"
    assert len(list(arts.glob("teacher-*"))) == 1 and len(list(arts.glob("distill-*"))) == 4
    logs = "".join(p.read_text() for p in (work / "cache" / "runs").glob("*/run.log") if not p.parent.is_symlink())  # not <pipeline>-latest
    assert logs.count("teacher: running") == 1, logs
    assert logs.count("teacher: waiting for pid") >= 1  # the other trial waited on the lease and reused the build
    assert logs.count("distill: running") == 4

    report = (work / "sweeps/grid/report.md").read_text()
    assert "hand-tuned" in report and "| front |" in report
    assert (work / "sweeps/grid/accuracy_vs_latency.png").stat().st_size > 1000
    assert (work / "sweeps/grid/accuracy_vs_size.png").stat().st_size > 1000
    picked = Path(out.strip().splitlines()[-1])  # --pick prints the bundle's path last
    assert (work / picked / "metadata.json").is_file()
    best = json.loads((work / "sweeps/grid/pick/pick.json").read_text())["trial"]
    assert best["size_mb"] <= 1.0
    assert best["val_accuracy"] == max(r["val_accuracy"] for r in rows if r["size_mb"] <= 1.0)

    # re-time the front and the baseline in interleaved rounds without training anything
    rc, out, err = _finish(_driver(work, space, cluster, "--report-only", "--rounds", "2"))
    assert rc == 0, err[-3000:]
    timed = [json.loads(line) for line in (work / "sweeps/grid/rounds.jsonl").read_text().splitlines()]
    chosen = front_ids | {r["trial"] for r in rows if r["baseline"]}
    assert [(t["round"], t["trial"]) for t in timed] == [(n, t) for n in (1, 2) for t in [x["trial"] for x in timed[: len(chosen)]]]
    assert {t["trial"] for t in timed} == chosen and all(t["p50_ms"] > 0 and t["git_commit"] for t in timed)
    assert "re-timed in 2 interleaved round(s)" in (work / "sweeps/grid/report.md").read_text()


def test_worker_killed_mid_trial_is_retried(cluster, work, tmp_path):
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "hold").write_text("1")  # the first trial to start waits until killed
    proc = _driver(work, _space(work, "killworker", layers="[1]", baseline="false"), cluster, fault_dir=fault)
    pid, key = _wait_for(lambda: (fault / "held").is_file() and (fault / "held").read_text().split(), "a held trial", proc=proc)
    os.kill(int(pid), signal.SIGKILL)  # the Ray worker running that trial
    (fault / "hold").unlink()
    rc, _, err = _finish(proc)
    assert rc == 0, err[-3000:]
    rows = _rows(work, "killworker")
    assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
    attempts = [p for p, k in _starts(fault) if k == key]
    assert len(attempts) == 2 and attempts[0] == pid and attempts[1] != pid  # retried in a new worker
    assert any(r["trial"] == key and r["pid"] != int(pid) for r in rows)


def test_failing_trial_is_recorded_and_the_sweep_goes_on(cluster, work, tmp_path):
    from albert_edge.sweepspace import trial_key

    fault = tmp_path / "fault"
    fault.mkdir()
    bad = trial_key({"distill.student.num_hidden_layers": 1, "distill.student.embedding_size": 32})
    (fault / "fail").write_text(bad)
    rc, _, err = _finish(_driver(work, _space(work, "failing", layers="[1]", baseline="false"), cluster, fault_dir=fault))
    assert rc == 0, err[-3000:]
    rows = {r["trial"]: r for r in _rows(work, "failing")}
    assert rows[bad]["status"] == "failed" and "injected failure" in rows[bad]["error"]
    assert [r["status"] for k, r in rows.items() if k != bad] == ["ok"]
    assert len([k for _, k in _starts(fault) if k == bad]) == 1  # a failing pipeline is a result: not retried
    assert f"trial {bad} failed" in err


def test_driver_killed_and_rerun_reuses_finished_trials(cluster, work, tmp_path):
    fault = tmp_path / "fault"
    fault.mkdir()
    (fault / "hold").write_text("2")  # one trial at a time; the second waits, so the kill lands mid-sweep
    space = _space(work, "killdriver", baseline="false", concurrent=1)
    proc = _driver(work, space, cluster, fault_dir=fault)
    _wait_for(lambda: (fault / "held").is_file() and len(_rows(work, "killdriver")) == 1, "one finished trial and a held one", proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    first = _rows(work, "killdriver")
    assert len(first) == 1 and first[0]["status"] == "ok"
    (fault / "hold").unlink()  # the held worker (if Ray has not killed it with its driver) may now go on
    rc, _, err = _finish(_driver(work, space, cluster, fault_dir=fault))
    assert rc == 0, err[-3000:]
    assert "resuming: 1 finished trial(s)" in err
    rows = _rows(work, "killdriver")
    assert len(rows) == 4 and len({r["trial"] for r in rows}) == 4 and all(r["status"] == "ok" for r in rows)
    assert rows[0] == first[0]  # kept as it was
    assert [k for _, k in _starts(fault)].count(first[0]["trial"]) == 1  # never run again


def test_nsga2_through_optuna_search_and_resume(cluster, work):
    """NSGA-II proposes the trials (through Ray Tune's OptunaSearch); a rerun tells the sampler
    the finished ones and runs nothing more."""
    space = write_yaml(work / "nsga.yaml", SPACE.format(name="nsga", layers="[1, 2]", baseline="false", concurrent=2).replace(
        "strategy: grid", "strategy: nsga2\n  trials: 3\n  population: 2"))
    rc, _, err = _finish(_driver(work, space, cluster))
    assert rc == 0, err[-3000:]
    rows = _rows(work, "nsga")
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), rows
    combos = {(a, b) for a in (1, 2) for b in (16, 32)}
    assert all((r["params"]["distill.student.num_hidden_layers"], r["params"]["distill.student.embedding_size"]) in combos for r in rows)
    rc, _, err = _finish(_driver(work, space, cluster))
    assert rc == 0 and "nsga2: 3 finished trial(s) told to the sampler, 0 to run" in err, err[-3000:]
    assert _rows(work, "nsga") == rows
