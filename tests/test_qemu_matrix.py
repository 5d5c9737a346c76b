"""The emulated CPU matrix end to end on a tiny real bundle: each CPU model's runtime sees that
model's features, every file is compared with this host's run of it on the same seeded rows,
device_tests runs there with a verdict per file (and fails on a golden file that lies), and an
SME model is refused on a qemu whose SME emulation is known wrong. Needs the built sysroot."""

from __future__ import annotations

import json
import shutil

import pytest

from benchmarks.devices.qemu import find_sysroot, qemu_version
from benchmarks.devices.qemu_cpus import parse_cpu, sme_refusal
from benchmarks.harness import BenchConfig, benchmark, bundle_targets

pytestmark = pytest.mark.qemu


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, tiny_teacher, tiny_cache):
    if find_sysroot() is None:
        pytest.skip("qemu-aarch64 is not built: run `albert-edge device setup qemu-aarch64` (or .ci/device-setup.sh)")
    from tests.conftest import TINY_YAML, run_yaml, write_yaml

    yaml_path = write_yaml(tmp_path_factory.mktemp("p") / "p.yaml", TINY_YAML + "      - export_onnx\n      - bundle\n")
    run = run_yaml(yaml_path, "tiny", tiny_cache)
    assert run.exit_code == 0, run.error
    src = run.steps[-1].artifact.path
    src = src / "bundle" if (src / "bundle" / "metadata.json").is_file() else src
    dest = tmp_path_factory.mktemp("b") / "bundle"
    shutil.copytree(src, dest)
    return dest


def _bench(bundle, devices):
    cfg = BenchConfig(devices=tuple(devices), runtimes=("onnxruntime",), threads=(1,), runs=1, min_secs=0.0, warmup_min_secs=0.0,
                      seq_lens=(32,), accuracy_seq_lens=(), accuracy_rows=12, real_lengths=False, include=("onnx-fp32",), timeout_s=600)
    return benchmark(bundle_targets(bundle), bundle / "eval.npz", cfg, {"min_agreement": 0.99}, None, None, bundle)


def test_cpu_models_compare_with_the_host_and_run_device_tests(tiny_bundle):
    rows = _bench(tiny_bundle, ["qemu-aarch64:cortex-a53", "qemu-aarch64:neoverse-n1", "qemu-aarch64:max"])
    by_dev = {r["device"]: r for r in rows}
    a53, n1, mx = by_dev["qemu-aarch64:cortex-a53"], by_dev["qemu-aarch64:neoverse-n1"], by_dev["qemu-aarch64:max"]
    assert a53["stamp"]["isa"]["dotprod"] is False and n1["stamp"]["isa"]["dotprod"] is True
    assert "asimddp" in n1["stamp"]["hwcaps"] and "asimddp" not in a53["stamp"]["hwcaps"]
    for r in (a53, n1):
        assert r["emulated"] and "emulated" in r["flags"] and not r["error"], r.get("error")
        assert r["eval_rows"] == 12 and len(r["sample_rows"]) == 12 and len(r["preds_real"]) == 12
        assert r["host_agreement"] == 1.0 and r["host_max_abs_diff"] < 1e-3  # fp32 on ARM kernels: the host's answers
        assert r["device_tests"]["verdict"] == "pass" and r["device_tests"]["passed"] >= 3, r["device_tests"]
    assert a53["sample_rows"] == n1["sample_rows"]  # one seeded sample across CPU models
    if sme_refusal(parse_cpu("max"), qemu_version()):
        assert "refused" in mx["error"] and "sme=off" in mx["error"]
    else:
        assert mx["stamp"]["isa"]["sme"] is True and mx["host_agreement"] is not None


def test_device_tests_fail_on_the_device_when_golden_logits_lie(tiny_bundle, tmp_path):
    bad = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bad)
    golden = json.loads((bad / "golden.json").read_text())
    golden["expected_logits"] = {k: [[x + 5.0 for x in row] for row in v] for k, v in golden["expected_logits"].items()}
    (bad / "golden.json").write_text(json.dumps(golden))
    rows = _bench(bad, ["qemu-aarch64:cortex-a53"])
    verdict = rows[0]["device_tests"]
    assert verdict["verdict"] == "fail" and verdict["failed"] >= 1 and "device-tests-failed" in rows[0]["flags"]
