"""benchmarks/hoststamp.py: CPU name and int8-relevant ISA features from recorded /proc/cpuinfo
texts (so the verdict is the same on any CPU), and measure.py's stamp on a device-like layout."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.devices.base import copy_payload
from benchmarks.hoststamp import cpu_features, cpu_model, host_stamp

EPYC_AVX2 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
processor\t: 1
model name\t: AMD EPYC 7B12
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2
"""
SAPPHIRE = "model name\t: Intel(R) Xeon(R) Platinum 8480+\nflags\t\t: avx2 avx512f avx512_vnni avx_vnni amx_tile amx_int8 amx_bf16\n"
GRAVITON3_FEATURES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 "
                      "asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg dcpodp svei8mm svebf16 i8mm bf16 dgh rng")
GRAVITON3 = f"""processor\t: 0
BogoMIPS\t: 2100.00
Features\t: {GRAVITON3_FEATURES}
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_x86_without_avx512_or_vnni():
    assert cpu_model(EPYC_AVX2) == "AMD EPYC 7B12"
    assert cpu_features(EPYC_AVX2, "x86_64") == {"avx2": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}


def test_x86_with_vnni_and_amx():
    assert cpu_features(SAPPHIRE, "x86_64") == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": True, "amx_int8": True}


def test_arm64_features_and_a_name_from_part_numbers():
    assert cpu_features(GRAVITON3, "aarch64") == {"asimd": True, "dotprod": True, "i8mm": True, "sve": True, "sme": False}
    assert cpu_model(GRAVITON3) == "ARM implementer 0x41 part 0xd40"


def test_unreadable_flags_are_unknown_not_absent():
    assert cpu_features("", "x86_64") is None
    assert cpu_features(EPYC_AVX2, "aarch64") is None  # no Features line


def test_host_stamp_has_every_field():
    s = host_stamp(EPYC_AVX2)
    for key in ("arch", "cpu_model", "isa", "cores", "cores_usable", "os", "python", "libraries"):
        assert key in s
    assert s["libraries"]["numpy"] == s["numpy"]


def test_measure_on_a_device_layout_imports_neither_torch_nor_the_project(tmp_path):
    """The payload alone, with the project made unimportable: what a board with numpy has."""
    copy_payload(tmp_path)
    code = ("import sys, runpy, json; sys.modules['benchmarks'] = None; sys.modules['albert_edge'] = None; "
            f"sys.argv = ['measure.py', '--stamp']; sys.path.insert(0, {str(tmp_path)!r}); "
            f"runpy.run_path({str(tmp_path / 'measure.py')!r}, run_name='__main__')")
    check = code.replace(
        "run_name='__main__')",
        "run_name='not_main'); print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))))",
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    stamp = json.loads(out.strip().splitlines()[-1])
    assert stamp["cpu_model"] and "isa" in stamp and stamp["libraries"]["numpy"]
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120, check=True).stdout
    assert json.loads(loaded.strip().splitlines()[-1]) == []


def test_the_emulated_arm64_device_stamps_a_cortex_a72_without_dotprod():
    from benchmarks.devices.qemu import fake_cpuinfo

    text = fake_cpuinfo(2)
    assert cpu_model(text) == "ARM Cortex-A72 (qemu-user emulated)"
    assert cpu_features(text, "aarch64") == {"asimd": True, "dotprod": False, "i8mm": False, "sve": False, "sme": False}


def test_describe_names_arch_cpu_cores_os_and_isa() -> None:
    from benchmarks.hoststamp import describe

    stamp = {"arch": "x86_64", "cpu_model": "AMD EPYC", "cores": 2, "os": "Linux 6.1", "isa": {"avx2": True}}
    assert describe(stamp) == "x86_64 AMD EPYC (2 cores, Linux 6.1; ISA {'avx2': True})"
