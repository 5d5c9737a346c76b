"""The qemu-aarch64 device: the cached arm64 sysroot runs the sysroot's own Python and uname
under qemu-user, stamps itself emulated, and an exported ONNX file gives the host's answers on
ARM kernels. Skips (with the command to run) when the device is not built; CI builds it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from benchmarks.devices.base import REPO_ROOT, DeviceError, full_stamp, get_device, parse_spec
from benchmarks.devices.qemu import CPU_MODEL, fake_cpuinfo, find_sysroot, open_device

pytestmark = pytest.mark.qemu
BUILT = find_sysroot()
needs_device = pytest.mark.skipif(
    BUILT is None, reason="qemu-aarch64 is not built: run `albert-edge device setup qemu-aarch64` (or .ci/device-setup.sh)"
)


def test_fake_cpuinfo_is_an_arm_cortex_a72():
    text = fake_cpuinfo(4)
    assert text.count("processor\t:") == 4 and text.count("CPU part\t: 0xd08") == 4
    assert f"Hardware\t: {CPU_MODEL}" in text and "GenuineIntel" not in text


def test_missing_device_says_how_to_build_it(tmp_path):
    with pytest.raises(DeviceError, match="device setup qemu-aarch64"):
        open_device(parse_spec("qemu-aarch64"), root=tmp_path / "nothing-here")


@pytest.fixture(scope="module")
def dev():
    if BUILT is None:
        pytest.skip("qemu-aarch64 is not built: run `albert-edge device setup qemu-aarch64` (or .ci/device-setup.sh)")
    d = get_device("qemu-aarch64")
    yield d
    d.close()


@needs_device
def test_emulated_uname_and_stamp(dev):
    rc, out, err = dev.run(["uname", "-m"], 60)
    assert (rc, out.strip()) == (0, "aarch64"), err
    stamp = full_stamp(dev)
    assert stamp["emulated"] is True and stamp["arch"] == "aarch64" and "Cortex-A72" in stamp["cpu_model"]
    assert "NOT device speed" in stamp["latency_note"]
    built = json.loads((BUILT.root / "stamp.json").read_text())
    assert built["emulated"] is True and set(built["versions"]) >= {"numpy", "onnxruntime", "ai-edge-litert", "pytest"}


@needs_device
def test_child_processes_of_the_emulated_python_are_emulated_too(dev):
    code = ("import subprocess, sys; print(subprocess.run([sys.executable, '-c', 'import platform; print(platform.machine())'], "
            "capture_output=True, text=True, check=True).stdout.strip())")
    rc, out, err = dev.run_python(["-c", code], 120)
    assert (rc, out.strip()) == (0, "aarch64"), err


@needs_device
def test_exported_onnx_gives_the_hosts_answers_on_arm(dev, tmp_path, tiny_teacher):
    """The tiny teacher exported by export_onnx; logits on aarch64 onnxruntime vs the host's."""
    from albert_edge.models import load_model
    from edge_runtime import open_model
    from export.onnx import export_onnx

    model = load_model(tiny_teacher.model_dir)[0]
    payload = tmp_path / "payload"
    payload.mkdir()
    export_onnx(model, payload / "m.onnx")
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 1000, size=(4, 24)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[2:, 16:] = 0
    np.savez(payload / "inputs.npz", ids=ids, mask=mask)
    host = open_model(str(payload / "m.onnx"))(ids, mask)
    shutil.copytree(REPO_ROOT / "edge_runtime", payload / "edge_runtime", ignore=shutil.ignore_patterns("__pycache__"))
    (payload / "job.py").write_text(
        "import sys, platform, numpy as np\nsys.path.insert(0, sys.argv[1])\nimport edge_runtime\n"
        "d = np.load(sys.argv[1] + '/inputs.npz')\nm = edge_runtime.open_model(sys.argv[1] + '/m.onnx', threads=1)\n"
        "np.save(sys.argv[1] + '/arm.npy', m(d['ids'], d['mask']))\nprint(platform.machine())\n"
    )
    remote = dev.push(payload)
    rc, out, err = dev.run_python([f"{remote}/job.py", remote], 300)
    assert rc == 0, err
    assert out.strip() == "aarch64"
    dev.pull(f"{remote}/arm.npy", tmp_path / "arm.npy")
    arm = np.load(tmp_path / "arm.npy")
    assert arm.shape == host.shape
    assert np.abs(arm - host).max() < 1e-4
    assert (arm.argmax(-1) == host.argmax(-1)).all()
