"""Hostile boards and hostile bundles for `bench` and the devices: a login that prints a banner,
a listener that greets and stalls, a board that hangs mid-row, tampered or path-naming bundle
metadata, results written into a cached artifact, a benchmark killed mid-run.

A fake `ssh` on PATH plays the board: it prints a login banner, then runs the remote command
with /bin/sh in a private "home" (cwd) and a private TMPDIR, so what a real board would lose
is visible here. Each probe states the exit code and the words of the message it expects."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from albert_edge.cli import main
from benchmarks.devices.base import DeviceError, get_device, parse_spec
from benchmarks.devices.ssh import SshDevice

REPO = Path(__file__).resolve().parents[1]

FAKE_SSH = """#!{python}
# A fake ssh client: a board whose login prints a banner, then runs the command in its home.
import os, sys
args = sys.argv[1:]
cmd = args[args.index("--") + 2]
with open(os.environ["FAKE_BOARD_LOG"], "a") as fh:
    fh.write(cmd.replace("\\n", " ") + "\\n")
sys.stdout.write(os.environ.get("FAKE_BOARD_BANNER", ""))
sys.stdout.flush()
if os.environ.get("FAKE_BOARD_MODE") == "banner-only":
    sys.exit(0)
os.chdir(os.environ["FAKE_BOARD_HOME"])
env = dict(os.environ, TMPDIR=os.environ["FAKE_BOARD_TMP"], PATH=os.environ["FAKE_BOARD_BIN"] + ":/usr/bin:/bin")
os.execve("/bin/sh", ["/bin/sh", "-c", cmd], env)
"""
# The board's python3: this interpreter, or (FAKE_BOARD_HANG) a measurement that never ends.
BOARD_PYTHON = """#!/bin/sh
case "$*" in *measure.py*) if [ -n "${{FAKE_BOARD_HANG:-}}" ]; then exec sleep 300; fi ;; esac
exec {python} "$@"
"""


class Board:
    """Paths of one fake board; `env` is what a process talking to it needs."""

    def __init__(self, root: Path, banner: str) -> None:
        self.root = root
        self.home, self.tmp, self.bin, self.client = root / "home", root / "board-tmp", root / "board-bin", root / "client-bin"
        for d in (self.home, self.tmp, self.bin, self.client):
            d.mkdir(parents=True)
        (self.home / "Welcome").mkdir()
        (self.home / "Welcome" / "precious.txt").write_text("the user's files\n")
        self.log = root / "commands.log"
        self.log.write_text("")
        (self.client / "ssh").write_text(FAKE_SSH.format(python=sys.executable))
        (self.bin / "python3").write_text(BOARD_PYTHON.format(python=sys.executable))
        for f in (self.client / "ssh", self.bin / "python3"):
            f.chmod(0o755)
        self.env = {
            "PATH": f"{self.client}:{os.environ['PATH']}", "FAKE_BOARD_HOME": str(self.home), "FAKE_BOARD_TMP": str(self.tmp),
            "FAKE_BOARD_BIN": str(self.bin), "FAKE_BOARD_LOG": str(self.log), "FAKE_BOARD_BANNER": banner,
        }

    def commands(self) -> list[str]:
        return self.log.read_text().splitlines()

    def intact(self) -> bool:
        return (self.home / "Welcome" / "precious.txt").read_text() == "the user's files\n"


BANNER = "Welcome to the board\nLast login: Mon Nov 30 from 10.0.0.2\n"


@pytest.fixture
def board(tmp_path, monkeypatch):
    # a forged marker in the banner must not be taken for the work directory either
    b = Board(tmp_path / "board", BANNER + f"ALBERT_EDGE_WORKDIR={tmp_path / 'board' / 'home' / 'Welcome'}\n")
    for k, v in b.env.items():
        monkeypatch.setenv(k, v)
    return b


@pytest.fixture(autouse=True)
def private_tmp(tmp_path, monkeypatch):
    """This test's scratch directories (and start-up sweeps) stay in its own temp dir."""
    d = tmp_path / "host-tmp"
    d.mkdir()
    monkeypatch.setenv("TMPDIR", str(d))
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


def _onnx(path: Path) -> Path:
    """A tiny valid classifier (Gather + ReduceMean): loads and runs in a second."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((100, 2), 0.5, dtype=np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Gather", ["w", "input_ids"], ["e"]), helper.make_node("ReduceMean", ["e"], ["logits"], axes=[1], keepdims=0)],
        "m", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["b", "s"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 2])], [w],
    )
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _bundle(d: Path, entries: list[dict] | None = None) -> Path:
    """A bundle with one good ONNX file and the eval inputs it is measured on."""
    d.mkdir(parents=True, exist_ok=True)
    good = _onnx(d / "good.onnx")
    ids = np.random.default_rng(0).integers(5, 100, (4, 16))
    np.savez(d / "eval.npz", input_ids=ids, attention_mask=np.ones_like(ids), token_type_ids=np.zeros_like(ids), lengths=np.full(4, 16))
    if entries is None:
        entries = [{"name": "good", "file": "good.onnx", "format": "onnx", "precision": "fp32", "sha256": _sha(good)}]
    (d / "metadata.json").write_text(json.dumps({"format_version": 1, "variants": entries}))
    return d


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): _sha(p) for p in sorted(d.rglob("*")) if p.is_file()}


# the bundles here carry no golden vectors: the on-device suite is tested elsewhere (test_fidelity, test_smoke)
FAST = ["--runs", "1", "--warmup", "0", "--seq-len", "16", "--threads", "1", "--runtimes", "onnxruntime", "--no-device-tests"]


def _bench(capsys, *argv: str) -> tuple[int, str]:
    rc = main(["bench", *argv])
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


# ------------------------------------------------------------------ the remote work directory


def test_login_banner_never_names_the_work_directory(board):
    """Exit 0: a board whose login prints "Welcome ..." keeps ~/Welcome; the real work dir
    (made by mktemp under the board's TMPDIR) is used and removed, nothing else."""
    dev = get_device("ssh://tester@board", remote_python="python3")
    src = board.root / "payload"
    src.mkdir()
    (src / "job.txt").write_text("x")
    remote = dev.push(src)
    workdir = remote.rsplit("/", 1)[0]
    assert workdir.startswith(str(board.tmp) + "/albert-edge."), workdir
    assert dev.run(["cat", f"{remote}/job.txt"], 20)[1].endswith("x")
    dev.close()
    assert board.intact(), "cleanup removed a directory in the board's home"
    assert not Path(workdir).exists() and list(board.tmp.iterdir()) == []
    assert not any("Welcome" in c for c in board.commands() if "rm " in c)


def test_board_that_never_runs_the_command_gets_no_rm(board, monkeypatch):
    """A board that prints its banner but never runs the command: a DeviceError that says the
    work directory could not be made; close() then removes nothing at all."""
    monkeypatch.setenv("FAKE_BOARD_MODE", "banner-only")
    dev = get_device("ssh://tester@board")
    with pytest.raises(DeviceError, match="work directory"):
        dev.run(["true"], 10)
    dev.close()
    assert board.intact()
    assert not any("rm " in c for c in board.commands()), board.commands()


def test_cleanup_refuses_a_directory_it_did_not_create(board):
    """Even a work dir path that went wrong after creation is never handed to rm."""
    dev = get_device("ssh://tester@board")
    assert dev.run(["true"], 10)[0] == 0
    dev._workdir = "Welcome"  # what the old parser took from the banner
    dev.close()
    assert board.intact()
    assert not any("rm " in c and "Welcome" in c for c in board.commands())


# ------------------------------------------------------------------ stalls and timeouts


@pytest.mark.skipif(shutil.which("ssh") is None, reason="needs the openssh client (apt-get install openssh-client)")
def test_listener_that_greets_and_stalls_gets_a_hint(tmp_path):
    """Something on the port answers with an ssh greeting and then says nothing: a DeviceError
    that names the handshake and the likely causes, not a bare "exit 255"."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        try:
            while True:
                conn, _ = srv.accept()
                held.append(conn)
                conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    known = tmp_path / "known_hosts"
    known.write_text("")
    dev = SshDevice(parse_spec(f"ssh://u@127.0.0.1:{port}"), known_hosts=known, ssh_config="/dev/null", connect_timeout=2)
    t0 = time.monotonic()
    try:
        with pytest.raises(DeviceError) as caught:
            dev.run(["true"], 10)
    finally:
        srv.close()
        for c in held:
            c.close()
    msg = str(caught.value)
    assert "handshake" in msg and "sshd" in msg, msg
    assert time.monotonic() - t0 < 30


def test_bench_timeout_stops_a_hung_row(board, capsys, monkeypatch, tmp_path):
    """`bench --timeout 2` on a board whose measurement hangs: exit 1 within seconds, the row
    says it timed out and which setting to raise; the board's home is intact."""
    monkeypatch.setenv("FAKE_BOARD_HANG", "1")
    bundle = _bundle(tmp_path / "b")
    t0 = time.monotonic()
    rc, out = _bench(capsys, str(bundle), "--device", "ssh://tester@board", "--timeout", "2", "--out", str(tmp_path / "o"), *FAST)
    assert rc == 1, out
    assert "timed out" in out and "--timeout" in out, out
    assert time.monotonic() - t0 < 200  # the fake board hangs for 300 s; a loaded 2-core machine needs slack
    assert board.intact() and list(board.tmp.iterdir()) == []


def test_stage_timeout_uses_the_same_limit(board, monkeypatch, tmp_path):
    """The pipeline's benchmark stage goes through benchmark() with its config's `timeout_s`:
    the hung row ends at that limit with the same message, and the next target still runs."""
    from benchmarks.harness import BenchConfig, benchmark, bundle_targets

    monkeypatch.setenv("FAKE_BOARD_HANG", "1")
    bundle = _bundle(tmp_path / "b")
    cfg = BenchConfig(devices=("ssh://tester@board",), timeout_s=2, runs=1, warmup=0, min_secs=0.0, warmup_min_secs=0.0,
                      threads=(1,), seq_lens=(16,), runtimes=("onnxruntime",))
    t0 = time.monotonic()
    rows = benchmark(bundle_targets(bundle), bundle / "eval.npz", cfg, {})
    assert len(rows) == 1 and "timed out after 2s" in rows[0]["error"] and "timeout_s" in rows[0]["error"], rows
    assert time.monotonic() - t0 < 200 and board.intact()  # well below the board's 300 s hang


def test_stage_config_timeout_is_checked():
    """The benchmark stage's per-row `timeout_s` is a positive number of seconds (exit 2 otherwise)."""
    from albert_edge.schema import ConfigError, build
    from benchmarks.harness import BenchConfig

    assert build(BenchConfig, {"timeout_s": 5}, "benchmark").timeout_s == 5
    with pytest.raises(ConfigError, match="timeout"):
        build(BenchConfig, {"timeout_s": 0}, "benchmark")


# ------------------------------------------------------------------ where results go


def _cache_with_bundle(tmp_path: Path) -> tuple[Path, Path, Path]:
    """cache/artifacts/bundle-abc/{manifest.json, bundle/} and a run dir whose summary points at it."""
    cache = tmp_path / "cache"
    art = cache / "artifacts" / "bundle-abc"
    _bundle(art / "bundle")
    (art / "manifest.json").write_text(json.dumps({"kind": "bundle", "step": "bundle", "key": "abc", "files": _tree(art)}))
    run = cache / "runs" / "tiny-20260101-000000"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"steps": [{"stage": "bundle", "artifact": str(art)}]}))
    return cache, art, run


def test_bench_never_writes_into_a_cached_artifact(tmp_path, capsys):
    """Exit 0, results in RUN/bench for a run dir and in the cache's runs/ for an artifact; the
    artifact's files are byte-identical afterwards; an --out inside an artifact is exit 2."""
    cache, art, run = _cache_with_bundle(tmp_path)
    before = _tree(art)
    rc, out = _bench(capsys, str(run), *FAST)
    assert rc == 0, out
    assert (run / "bench" / "results.jsonl").is_file()
    rc, out = _bench(capsys, str(art), *FAST)
    assert rc == 0, out
    assert (cache / "runs" / "bench-bundle-abc" / "results.jsonl").is_file(), out
    assert _tree(art) == before, "bench changed a cached artifact"
    rc, out = _bench(capsys, str(run), "--out", str(art / "bench"), *FAST)
    assert rc == 2 and "inside the cached artifact" in out and "Traceback" not in out, out
    assert _tree(art) == before


# ------------------------------------------------------------------ what bench trusts


def test_bench_checks_sha256_and_fails_when_any_file_fails(tmp_path, capsys):
    """A one-byte edit is caught before measuring (sha256 mismatch, not measured), a file that
    does not load is reported, the good file is measured, and the exit code is 1."""
    d = tmp_path / "b"
    _bundle(d)
    tampered = _onnx(d / "tampered.onnx")
    expected = _sha(tampered)
    data = bytearray(tampered.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    broken = d / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    meta = json.loads((d / "metadata.json").read_text())
    meta["variants"] += [
        {"name": "tampered", "file": "tampered.onnx", "format": "onnx", "precision": "int8-dynamic", "sha256": expected},
        {"name": "broken", "file": "broken.onnx", "format": "onnx", "precision": "fp16", "sha256": _sha(broken)},
    ]
    (d / "metadata.json").write_text(json.dumps(meta))
    rc, out = _bench(capsys, str(d), "--out", str(tmp_path / "o"), *FAST)
    assert rc == 1, out
    rows = {r["variant"]: r for r in map(json.loads, (tmp_path / "o" / "results.jsonl").read_text().splitlines())}
    assert "sha256 mismatch" in rows["tampered"]["error"] and rows["tampered"].get("load_ms") is None
    assert "load failed" in rows["broken"]["error"]
    assert not rows["good"]["error"] and rows["good"]["p50_ms"] > 0
    assert "2 file(s) failed" in out, out


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ('{"variants": [{"name": "m", "fi', "metadata.json"),
        ('{"variants": [{"name": "m", "format": "onnx"}]}', "no `file`"),
        ('{"variants": {"file": "good.onnx"}}', "variants"),
        ('[1, 2]', "metadata.json"),
        (b'{"variants": [{"file": "\xff.onnx"}]}', "metadata.json"),
    ],
)
def test_bad_metadata_is_one_line_and_exit_2(tmp_path, capsys, metadata, words):
    d = _bundle(tmp_path / "b")
    (d / "metadata.json").write_bytes(metadata if isinstance(metadata, bytes) else metadata.encode())
    rc, out = _bench(capsys, str(d), "--out", str(tmp_path / "o"), *FAST)
    assert rc == 2, out
    assert words in out and "Traceback" not in out and len(out.strip().splitlines()) == 1, out


@pytest.mark.parametrize("name", ["../../x", "/etc/hostname", "sub/good.onnx", "..", ".", "a\\b.onnx", "", "link.onnx"])
def test_bundle_file_names_cannot_point_outside_the_bundle(tmp_path, capsys, name):
    """Exit 2 before anything is staged: a file entry must be a plain name of a file in the bundle."""
    outside = tmp_path / "x"
    outside.write_text("secret")
    d = _bundle(tmp_path / "deep" / "er" / "b")
    (d / "sub").mkdir()
    (d / "link.onnx").symlink_to(outside)
    (d / "metadata.json").write_text(json.dumps({"variants": [{"name": "evil", "file": name, "format": "onnx", "precision": "fp32"}]}))
    rc, out = _bench(capsys, str(d), "--out", str(tmp_path / "o"), *FAST)
    assert rc == 2, out
    assert "not a plain file name" in out or "outside the bundle" in out, out
    assert not (tmp_path / "o" / "results.jsonl").exists()


# ------------------------------------------------------------------ leaks


def _leftovers(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith("albert-edge") or any(p.rglob("inputs.npz")))


def test_killed_bench_leaves_nothing_that_clean_cannot_remove(board, tmp_path, private_tmp):
    """SIGKILL mid-row leaves scratch dirs and inputs.npz; `albert-edge clean` removes those
    whose owner is dead and keeps a live run's; the board's work dir goes with the next session.
    (The orphaned board command ends by its own --timeout.)"""
    bundle = _bundle(tmp_path / "b")
    (bundle / "eval.npz").unlink()  # synthetic inputs: the CLI's own temp inputs.npz too
    env = {**os.environ, **board.env, "TMPDIR": str(private_tmp), "FAKE_BOARD_HANG": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "albert_edge.cli",
            "bench",
            str(bundle),
            "--device",
            "ssh://tester@board",
            "--out",
            str(tmp_path / "o"),
            "--timeout",
            "20",
            *FAST,
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("measure.py" in c for c in board.commands()):
            time.sleep(0.2)
        assert any("measure.py" in c for c in board.commands()), "the benchmark never reached the board"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    left = _leftovers(private_tmp)
    assert left, "nothing was left behind: the probe did not kill mid-row"
    from benchmarks.devices.scratch import scratch_dir

    with scratch_dir("bench") as mine:
        rc = subprocess.run([sys.executable, "-m", "albert_edge.cli", "clean", "--cache-dir", str(tmp_path / "cache")], env=env, cwd=REPO,
                            capture_output=True, text=True, check=False)
        assert rc.returncode == 0, rc.stderr
        assert mine.is_dir(), "clean removed the scratch dir of a live run"
    assert _leftovers(private_tmp) == [], _leftovers(private_tmp)
    # on the board: the killed run's work dir goes with the next session from this host
    assert [p.name[:12] for p in board.tmp.iterdir()] == ["albert-edge."]
    dev = get_device("ssh://tester@board")
    assert dev.run(["true"], 10)[0] == 0
    dev.close()
    assert list(board.tmp.iterdir()) == []


def test_sweep_removes_only_dead_owners_on_this_host(private_tmp):
    """Only dirs whose owner is dead (or whose pid now names a process that started at another
    time) are removed; a live owner's, another host's and unknown names are kept."""
    from benchmarks.devices.scratch import _start_time, host_tag, sweep

    gone_pid = subprocess.Popen(["true"])
    gone_pid.wait()
    me = os.getpid()
    names = {
        "dead": f"albert-edge-bench.{host_tag()}-p{gone_pid.pid}-1.abc",
        "reused": f"albert-edge-bench.{host_tag()}-p{me}-{_start_time(me) + 1}.abc",
        "live": f"albert-edge-bench.{host_tag()}-p{me}-{_start_time(me)}.abc",
        "other-host": f"albert-edge-bench.00000000-p{gone_pid.pid}-1.abc",
        "not-ours": "albert-edge-bench-legacy",
    }
    for n in names.values():
        (private_tmp / n).mkdir()
        (private_tmp / n / "inputs.npz").write_bytes(b"x")
    removed = {p.name for p in sweep(private_tmp)}
    assert removed == {names["dead"], names["reused"]}
    assert all((private_tmp / names[k]).is_dir() for k in ("live", "other-host", "not-ours"))


@pytest.mark.parametrize(("spec", "words"), [("ssh://u@h:0", "1..65535"), ("ssh://u@h:70000", "1..65535"), ("ssh://u@h:", "empty port")])
def test_ssh_port_is_never_dropped(tmp_path, capsys, spec, words):
    """`ssh://u@h:0` used to fall back to port 22 without a word: exit 2 naming the port."""
    rc, out = _bench(capsys, str(_bundle(tmp_path / "b")), "--device", spec, "--out", str(tmp_path / "o"), *FAST)
    assert rc == 2 and words in out and "Traceback" not in out, out


def test_push_never_follows_a_link_out_of_the_directory(board, tmp_path):
    """A bundle pushed for device_tests holding a symlink to a file elsewhere is refused before
    anything is sent: the board never receives the file behind the link."""
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    src = tmp_path / "bundle"
    src.mkdir()
    (src / "metadata.json").write_text("{}")
    (src / "model.onnx").symlink_to(secret)
    dev = get_device("ssh://tester@board")
    with pytest.raises(DeviceError, match="links outside"):
        dev.push(src)
    dev.close()
    assert not any("tar -x" in c for c in board.commands())
    assert "host secret" not in "".join(p.read_text(errors="replace") for p in board.tmp.rglob("*") if p.is_file())


def test_board_sweep_keeps_live_and_foreign_work_dirs(board):
    """A new session removes only board work dirs whose owner file names a dead process of this
    host; a live run's, another host's and a dir without an owner file stay."""
    from benchmarks.devices.scratch import _start_time, host_tag

    gone = subprocess.Popen(["true"])
    gone.wait()
    me = os.getpid()
    owners = {
        "Dead01": f"{host_tag()}-p{gone.pid}-1",
        "Live01": f"{host_tag()}-p{me}-{_start_time(me)}",
        "Other1": f"00000000-p{gone.pid}-1",
        "NoOwnr": None,
    }
    for name, owner in owners.items():
        d = board.tmp / f"albert-edge.{name}"
        d.mkdir()
        if owner:
            (d / ".albert-edge-owner").write_text(owner + "\n")
    dev = get_device("ssh://tester@board")
    assert dev.run(["true"], 10)[0] == 0
    dev.close()
    assert sorted(p.name for p in board.tmp.iterdir()) == ["albert-edge.Live01", "albert-edge.NoOwnr", "albert-edge.Other1"]
