"""The ssh device against a real loopback sshd (.ci/sshd.sh): strict host keys, quoting, push/run/pull,
remote timeouts, a dropped and a hung connection (clear DeviceError, pulled results kept), and
device_tests on a real bundle through an sshd whose login runs the emulated aarch64 Python."""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from benchmarks.devices.base import DeviceError, get_device
from benchmarks.devices.ssh import SshDevice
from benchmarks.devices.suite import run_device_tests

REPO = Path(__file__).resolve().parents[1]
SSHD_SCRIPT = REPO / ".ci" / "sshd.sh"

pytestmark = pytest.mark.skipif(
    not (Path("/usr/sbin/sshd").exists() and shutil.which("ssh") and shutil.which("ssh-keygen")),
    reason="needs openssh-server and openssh-client (apt-get install openssh-server openssh-client)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _descendants(pid: int) -> list[int]:
    """Child processes (any depth) of pid: the per-connection sshd processes of our sshd."""
    parents: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            parents[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        frontier += kids
    return out


class Sshd:
    """A loopback sshd started with .ci/sshd.sh in the foreground; this test owns the process."""

    def __init__(self, state: Path, login: str) -> None:
        self.state, self.port = state, _free_port()
        env = {**os.environ, "ALBERT_EDGE_SSHD_LOGIN": login}
        self.log = open(state.parent / f"{state.name}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(SSHD_SCRIPT), "foreground", str(state), str(self.port)], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(state.parent / f'{state.name}.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("sshd did not listen within 20s")

    @property
    def mode(self) -> str:
        return (self.state / "mode").read_text().strip()

    def device(self, **options) -> SshDevice:
        options.setdefault("ssh_config", str(self.state / "ssh_config"))
        return get_device(f"ssh://{os.environ.get('USER') or 'root'}@127.0.0.1:{self.port}", **options)

    def signal_sessions(self, sig: int) -> list[int]:
        pids = _descendants(self.proc.pid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    def stop(self) -> None:
        self.signal_sessions(signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """Native login: fast; python is this interpreter (remote_python=sys.executable)."""
    server = Sshd(tmp_path_factory.mktemp("sshd") / "state", login="native")
    yield server
    server.stop()


@pytest.fixture
def dev(sshd):
    d = sshd.device(remote_python=sys.executable)
    yield d
    d.close()


def test_login_runs_commands_and_stamps_the_board(dev):
    rc, out, err = dev.run(["uname", "-m"], 20)
    assert (rc, out.strip()) == (0, platform.machine()), err
    stamp = dev.stamp()
    assert stamp["arch"] == platform.machine() and stamp["emulated"] is False
    assert stamp["cores"] >= 1 and stamp["device"].startswith("ssh://")


def test_arguments_are_quoted_never_pasted_into_the_shell(dev, tmp_path):
    canary = tmp_path / "pwned"
    args = ["a b", f"; touch {canary}", "$(id)", "`id`", "it's", "*"]
    rc, out, _ = dev.run(["printf", "%s\\n", *args], 20)
    assert rc == 0
    assert out.splitlines() == args
    assert not canary.exists()


def test_push_run_pull_roundtrip(dev, tmp_path):
    src = tmp_path / "payload dir"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data file.txt").write_text("hello device\n")
    (src / "job.py").write_text(
        "import json, sys, pathlib\nd = pathlib.Path(sys.argv[1])\n(d / 'out.json').write_text(json.dumps({'read': (d / 'sub' / 'data "
        "file.txt').read_text()}))\n"
    )
    remote = dev.push(src)
    assert remote != str(src) and remote.endswith("/payload dir")
    rc, _, err = dev.run_python([f"{remote}/job.py", remote], 60)
    assert rc == 0, err
    dev.pull(f"{remote}/out.json", tmp_path / "back" / "out.json")
    assert json.loads((tmp_path / "back" / "out.json").read_text()) == {"read": "hello device\n"}
    assert dev.pulled == [tmp_path / "back" / "out.json"]
    with pytest.raises(DeviceError, match="cannot read"):
        dev.pull(f"{remote}/missing.json", tmp_path / "back" / "missing.json")
    assert not (tmp_path / "back" / "missing.json").exists()
    workdir = remote.rsplit("/", 1)[0]
    dev.close()
    assert not Path(workdir).exists(), "close() leaves the remote work directory behind"


def test_remote_timeout_gives_124_and_kills_the_command(dev):
    t0 = time.monotonic()
    rc, _, _ = dev.run(["sleep", "30"], timeout=1)
    assert rc == 124
    assert time.monotonic() - t0 < 15


def test_unknown_host_key_is_refused_by_default(sshd, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    strict = SshDevice(sshd.device().spec, identity=sshd.state / "client_ed25519", known_hosts=empty, ssh_config="/dev/null")
    with pytest.raises(DeviceError, match="known_hosts"):
        strict.run(["true"], 20)
    trusting = SshDevice(
        sshd.device().spec, identity=sshd.state / "client_ed25519", known_hosts=empty, ssh_config="/dev/null", insecure_accept_new=True
    )
    assert trusting.run(["true"], 20)[0] == 0
    trusting.close()
    assert "127.0.0.1" in empty.read_text(), "accept-new did not record the host key"


def test_dropped_connection_is_a_clear_error_and_keeps_pulled_results(tmp_path):
    server = Sshd(tmp_path / "state", login="native")
    try:
        dev = server.device(remote_python=sys.executable)
        src = tmp_path / "job"
        src.mkdir()
        (src / "first.json").write_text('{"row": 1}')
        remote = dev.push(src)
        dev.pull(f"{remote}/first.json", tmp_path / "results" / "first.json")
        caught: list[BaseException] = []

        def long_call() -> None:
            try:
                dev.run(["sleep", "20"], 30)
            except BaseException as err:  # noqa: BLE001
                caught.append(err)

        worker = threading.Thread(target=long_call)
        worker.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(_is_session(p) for p in _descendants(server.proc.pid)):
            time.sleep(0.2)
        time.sleep(0.5)
        assert server.signal_sessions(signal.SIGKILL), "no ssh session to drop"
        worker.join(timeout=20)
        assert not worker.is_alive()
        assert caught and isinstance(caught[0], DeviceError), caught
        assert "dropped" in str(caught[0]) and "1 result file(s) pulled before this are kept" in str(caught[0])
        assert json.loads((tmp_path / "results" / "first.json").read_text()) == {"row": 1}
        server.proc.kill()  # the board is gone: the next call says so instead of hanging
        server.proc.wait(timeout=10)
        with pytest.raises(DeviceError, match="refused|failed or dropped"):
            dev.run(["true"], 10)
        dev.close()  # must not raise with the board gone
    finally:
        server.stop()


def _is_session(pid: int) -> bool:
    try:
        return b"sleep" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_hung_connection_times_out_with_a_clear_error(sshd):
    dev = sshd.device(remote_python=sys.executable, connect_timeout=2)
    dev._margin = lambda: 2.0  # type: ignore[method-assign]  # the watchdog: timeout + 2s here
    assert dev.run(["true"], 10)[0] == 0
    stopped: list[int] = []
    caught: list[BaseException] = []

    def call() -> None:
        try:
            dev.run(["sleep", "3"], 2)
        except BaseException as err:  # noqa: BLE001
            caught.append(err)

    worker = threading.Thread(target=call)
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not stopped:
            time.sleep(0.3)
            procs = _descendants(sshd.proc.pid)
            # stop the session only once the remote command runs: stopping (and later killing) the
            # login shell's start-up files half-way (pyenv's rehash, say) leaves stale locks behind
            if not any(_cmdline(p).startswith("sleep") for p in procs):
                continue
            for p in procs:
                try:  # a short-lived helper process may be gone before it is stopped
                    os.kill(p, signal.SIGSTOP)
                    stopped.append(p)
                except ProcessLookupError:
                    pass
        worker.join(timeout=20)
    finally:
        for p in stopped:
            try:
                os.kill(p, signal.SIGKILL)
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
    assert caught and isinstance(caught[0], DeviceError)
    assert "no answer within" in str(caught[0])


def test_device_tests_suite_runs_remotely_and_json_comes_back(dev, tmp_path):
    """A two-test suite (one passes, one fails on purpose) through run_device_tests."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text("def pytest_addoption(parser):\n    parser.addoption('--bundle')\n")
    (suite / "test_probe.py").write_text(
        "import os\n\ndef test_bundle_visible(request):\n    assert os.path.isfile(os.path.join(request.config.getoption('--bundle'), "
        "'m.onnx'))\n\n"
        "def test_fails_on_purpose():\n    assert 1 == 2\n"
    )
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "m.onnx").write_bytes(b"\0" * 32)
    result = run_device_tests(dev, bundle, tmp_path / "out", timeout=120, suite_dir=suite)
    assert result["counts"] == {"passed": 1, "failed": 1}
    assert result["returncode"] == 1 and result["arch"] == platform.machine()
    assert json.loads((tmp_path / "out" / "device-tests.json").read_text())["counts"] == result["counts"]


@pytest.mark.qemu
@pytest.mark.slow
def test_emulated_board_over_ssh_passes_device_tests_on_a_real_bundle(tmp_path, tiny_teacher, tiny_cache):
    """CI's ssh path: loopback sshd whose login is the emulated aarch64 Python; device_tests on a
    bundle built by the real pipeline (export_onnx + bundle on the tiny teacher)."""
    from benchmarks.devices.qemu import find_sysroot
    from tests.conftest import TINY_YAML, run_yaml, write_yaml

    if find_sysroot() is None:
        pytest.skip("qemu-aarch64 is not built: run `albert-edge device setup qemu-aarch64` (or .ci/device-setup.sh)")
    yaml_path = write_yaml(tmp_path / "p.yaml", TINY_YAML + "      - export_onnx\n      - bundle\n")
    run = run_yaml(yaml_path, "tiny", tiny_cache)
    assert run.exit_code == 0, run.error
    bundle = run.steps[-1].artifact.path
    server = Sshd(tmp_path / "state", login="auto")
    try:
        assert server.mode == "qemu"
        dev = server.device()
        assert dev.run(["uname", "-m"], 60)[1].strip() == "aarch64"
        result = run_device_tests(dev, bundle, tmp_path / "out", timeout=600)
        assert result["arch"] == "aarch64" and result["stamp"]["emulated"] is True
        assert result["returncode"] == 0, result["output_tail"]
        assert result["counts"].get("passed", 0) >= 3 and not result["counts"].get("failed")
        dev.close()
    finally:
        server.stop()
