"""CPU models of the emulated arm64 device: specs parse, /proc/cpuinfo says exactly what the
capability bits say (so runtimes and the stamp see one CPU), SME is refused on a qemu whose SME
emulation is known wrong. Pure functions: no sysroot, same verdict on any host CPU."""

from __future__ import annotations

import struct

import pytest

from benchmarks.devices.base import parse_spec
from benchmarks.devices.qemu_cpus import (
    HWCAP2_NAMES,
    HWCAP_NAMES,
    cpuinfo_text,
    decode_hwcaps,
    parse_auxv,
    parse_cpu,
    qemu_version_tuple,
    sme_refusal,
)
from benchmarks.hoststamp import cpu_features, cpu_model


def bits(names: list[str], table: tuple[str, ...]) -> int:
    return sum(1 << table.index(n) for n in names)


def test_device_specs_name_a_cpu_model():
    assert parse_spec("qemu-aarch64").cpu is None
    assert parse_spec("qemu-aarch64:neoverse-n1").cpu == "neoverse-n1"
    assert parse_cpu("max,sme=off").qemu_arg == "max,sme=off"
    assert parse_cpu(None).qemu_arg == "cortex-a72"
    pi = parse_cpu("cortex-a72,pi=on")  # a board's Python, not a qemu switch
    assert pi.pi and pi.qemu_arg == "cortex-a72" and pi.slug != parse_cpu("cortex-a72").slug
    for bad in ("qemu-aarch64:pentium", "qemu-aarch64:max,sme=maybe", "qemu-aarch64:max;rm"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_linux_hwcap_bit_positions():
    # uapi/asm/hwcap.h: HWCAP_ASIMDDP 1<<20, HWCAP2_I8MM 1<<13, HWCAP2_SME 1<<23
    assert HWCAP_NAMES[20] == "asimddp" and HWCAP2_NAMES[13] == "i8mm" and HWCAP2_NAMES[23] == "sme"
    assert decode_hwcaps(0b11 | 1 << 20, 1 << 13 | 1 << 23) == ["fp", "asimd", "asimddp", "i8mm", "sme"]


def test_auxv_is_read_as_pairs_of_u64():
    raw = struct.pack("<6Q", 16, 0b11, 26, 1 << 13, 0, 0)
    assert parse_auxv(raw + b"\0" * 5) == (0b11, 1 << 13)


@pytest.mark.parametrize(("model", "caps", "caps2", "want"), [
    ("cortex-a53", ["fp", "asimd", "crc32"], [], {"dotprod": False, "i8mm": False, "sme": False}),
    ("neoverse-n1", ["fp", "asimd", "asimddp"], [], {"dotprod": True, "i8mm": False, "sme": False}),
    ("max", ["fp", "asimd", "asimddp", "sve"], ["i8mm", "sme"], {"dotprod": True, "i8mm": True, "sme": True}),
])
def test_cpuinfo_says_what_the_hwcaps_say(model, caps, caps2, want):
    features = decode_hwcaps(bits(caps, HWCAP_NAMES), bits(caps2, HWCAP2_NAMES))
    text = cpuinfo_text(parse_cpu(model), features, 3)
    assert text.count("processor\t:") == 3
    seen = cpu_features(text, arch="aarch64")
    assert {k: seen[k] for k in want} == want
    assert model in cpu_model(text)


def test_sme_is_refused_on_an_old_qemu_only():
    old, new = "qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", "qemu-aarch64 version 10.0.3 (Debian 1:10.0.3+ds-1)"
    assert qemu_version_tuple(old) == (7, 2, 22)
    assert "sme=off" in (sme_refusal(parse_cpu("max"), old) or "")
    assert sme_refusal(parse_cpu("max"), new) is None
    assert sme_refusal(parse_cpu("max,sme=off"), old) is None
    assert sme_refusal(parse_cpu("neoverse-n1"), old) is None
    assert sme_refusal(parse_cpu("max"), "unknown") is not None
