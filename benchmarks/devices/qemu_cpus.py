"""CPU models for the emulated arm64 device: `qemu-aarch64:MODEL[,prop=on|off...][,pi=on]`.

Why: int8 answers depend on the kernel path a runtime picks, and it picks by CPU feature
(ARMv8.0 NEON, v8.2 dot-product, v8.6 i8mm, SME). qemu-user gives the guest the hardware
capability bits (AT_HWCAP/AT_HWCAP2) of the `-cpu` model it emulates; /proc/cpuinfo, which
qemu 7.2 does not emulate for arm64, must say the same, so it is written from those very bits
(read back from the emulated process's auxv) plus the model's MIDR fields.

`pi=on` is not a qemu switch: it gives the device a board's own Python environment, as on a
Raspberry Pi, where tflite-runtime 2.14 runs with numpy < 2 (its own site shadows numpy 2).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

# Models this module knows a MIDR for (implementer, variant, part, revision) and a marketing name.
MODELS: dict[str, tuple[int, int, int, int, str]] = {
    "cortex-a53": (0x41, 0x0, 0xD03, 4, "ARM Cortex-A53"),
    "cortex-a55": (0x41, 0x2, 0xD05, 0, "ARM Cortex-A55"),
    "cortex-a57": (0x41, 0x1, 0xD07, 1, "ARM Cortex-A57"),
    "cortex-a72": (0x41, 0x0, 0xD08, 3, "ARM Cortex-A72"),
    "cortex-a76": (0x41, 0x4, 0xD0B, 1, "ARM Cortex-A76"),
    "neoverse-n1": (0x41, 0x3, 0xD0C, 1, "ARM Neoverse-N1"),
    "neoverse-v1": (0x41, 0x1, 0xD40, 1, "ARM Neoverse-V1"),
    "a64fx": (0x46, 0x1, 0x001, 0, "Fujitsu A64FX"),
    "max": (0x00, 0x0, 0x051, 0, "qemu max (every feature this qemu emulates)"),
}
DEFAULT_MODEL = "cortex-a72"
SPEC_RE = re.compile(r"^([a-z0-9][a-z0-9-]*)((?:,[a-z][a-z0-9_-]*=(?:on|off))*)$")
# The oldest qemu whose SME emulation is trusted: qemu 7.2's `-cpu max` gives chance-level
# answers from dynamic-int8 files (ONNX Runtime and LiteRT alike) while qemu 10.0 matches x86.
MIN_SME_QEMU = (9, 0)

# Linux arch/arm64 uapi hwcap bits, in the order /proc/cpuinfo prints them.
HWCAP_NAMES = (
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid", "asimdrdm",
    "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat",
    "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",
)
HWCAP2_NAMES = (
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint", "svei8mm", "svef32mm",
    "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte", "ecv", "afp", "rpres", "mte3", "sme", "smei16i64",
    "smef64f64", "smei8i32", "smef16f32", "smeb16f32", "smef32f32", "smefa64", "wfxt", "ebf16", "sveebf16", "cssc",
    "rprfm", "sve2p1", "sme2", "sme2p1", "smei16i32", "smebi32i32", "smeb16b16", "smef16f16",
)
AT_HWCAP, AT_HWCAP2 = 16, 26
# Run inside the emulated Python: the capability bits qemu hands this CPU model.
AUXV_PROBE = (
    "import struct, json; d = open('/proc/self/auxv', 'rb').read(); "
    "v = dict(struct.iter_unpack('<QQ', d[: len(d) // 16 * 16])); print(json.dumps([v.get(16, 0), v.get(26, 0)]))"
)


# A board's Python for tflite-runtime: the last tflite-runtime release and the numpy it was built for.
PI_REQUIREMENTS = ("tflite-runtime==2.14.0", "numpy<2")
PI_SITE = "pisite"  # top-level directory of a pi view's sysroot, on the emulated PYTHONPATH


@dataclass(frozen=True)
class CpuModel:
    """A parsed `-cpu` argument: the model and its property switches (`sme=off`), and whether the
    device runs a board's own Python environment (`pi=on`)."""

    name: str
    props: tuple[tuple[str, str], ...] = ()
    pi: bool = False

    @property
    def qemu_arg(self) -> str:
        return ",".join([self.name, *(f"{k}={v}" for k, v in self.props)])

    @property
    def slug(self) -> str:
        """A directory name for this model's view of the sysroot."""
        return self.qemu_arg.replace(",", "+").replace("=", "-") + ("+pi" if self.pi else "")

    @property
    def marketing_name(self) -> str:
        return MODELS[self.name][4]

    def wants_sme(self) -> bool:
        """`max` turns SME on unless `sme=off`; no named model this qemu has carries SME."""
        return self.name == "max" and ("sme", "off") not in self.props


def parse_cpu(text: str | None) -> CpuModel:
    """`neoverse-n1`, `max,sme=off`; ValueError naming the known models otherwise."""
    if not text:
        return CpuModel(DEFAULT_MODEL)
    m = SPEC_RE.match(text.strip())
    if not m or m.group(1) not in MODELS:
        raise ValueError(f"qemu CPU {text!r}: use one of {', '.join(MODELS)}, optionally with switches such as max,sme=off")
    props = [tuple(p.split("=", 1)) for p in m.group(2).split(",") if p]
    pi = ("pi", "on") in props
    return CpuModel(m.group(1), tuple(p for p in props if p[0] != "pi"), pi)  # type: ignore[arg-type]


def decode_hwcaps(hwcap: int, hwcap2: int) -> list[str]:
    """Feature names of the bits set, as the Linux kernel prints them in /proc/cpuinfo."""
    names = [n for i, n in enumerate(HWCAP_NAMES) if hwcap >> i & 1]
    return names + [n for i, n in enumerate(HWCAP2_NAMES) if hwcap2 >> i & 1]


def parse_auxv(data: bytes) -> tuple[int, int]:
    """(AT_HWCAP, AT_HWCAP2) from a little-endian 64-bit auxv."""
    pairs = dict(struct.iter_unpack("<QQ", data[: len(data) // 16 * 16]))
    return pairs.get(AT_HWCAP, 0), pairs.get(AT_HWCAP2, 0)


def cpuinfo_text(cpu: CpuModel, features: list[str], cores: int) -> str:
    """A /proc/cpuinfo for `cores` cores of this model with exactly these features."""
    impl, variant, part, rev, name = MODELS[cpu.name]
    block = (
        f"processor\t: {{i}}\nBogoMIPS\t: 50.00\nFeatures\t: {' '.join(features)}\nCPU implementer\t: 0x{impl:02x}\n"
        f"CPU architecture: 8\nCPU variant\t: 0x{variant:x}\nCPU part\t: 0x{part:03x}\nCPU revision\t: {rev}\n"
    )
    return "\n".join(block.format(i=i) for i in range(max(1, cores))) + f"\nHardware\t: {name} (qemu-user -cpu {cpu.qemu_arg})\n"


def qemu_version_tuple(text: str) -> tuple[int, ...] | None:
    """(7, 2, 22) from `qemu-aarch64 version 7.2.22 (Debian ...)`; None if unreadable."""
    m = re.search(r"version (\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in m.groups() if g is not None) if m else None


def sme_refusal(cpu: CpuModel, qemu_version: str) -> str | None:
    """Why this qemu must not emulate this model (its SME emulation is known wrong), or None."""
    if not cpu.wants_sme():
        return None
    got = qemu_version_tuple(qemu_version)
    if got is not None and got[:2] >= MIN_SME_QEMU:
        return None
    return (
        f"-cpu {cpu.qemu_arg} turns SME on, and {qemu_version or 'this qemu'} emulates SME wrongly (qemu 7.2 gives chance-level "
        f"int8 answers there); use `{cpu.name},sme=off`, or point QEMU_AARCH64 at qemu >= {'.'.join(map(str, MIN_SME_QEMU))} "
        "(e.g. Debian 13's qemu-user)"
    )
