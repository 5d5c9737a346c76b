"""Report tables for answers on other devices: agreement with this host per file and CPU model,
the device_tests verdicts, the int8 CPU-feature matrix and what can be said about each miss.

Why a diagnosis column: under emulation a wrong answer is either the runtime's kernel for that
CPU feature or qemu's emulation of the instructions the kernel uses. The fp32 twin under the same
CPU model tells a broken floating-point emulation apart; a `sme=off` sibling isolates the SME
path; nothing on one qemu tells an int8 kernel from its emulation, and the table says so.
"""

from __future__ import annotations

from typing import Any

from benchmarks.devices.qemu_cpus import parse_cpu, sme_refusal

FEATURES = ("dotprod", "i8mm", "sve", "sme")
FP32_CLOSE = 1e-3  # max |logit diff| under which an fp32 file counts as matching the host


def _cpu(r: dict[str, Any]) -> str:
    """The CPU model a row ran under: the device spec's `:CPU` part (it keeps `pi=on`), else the stamp's."""
    device, s = str(r.get("device") or ""), r.get("stamp") or {}
    if device.startswith("qemu-aarch64:"):
        return device.split(":", 1)[1]
    return str(s.get("qemu_cpu") or s.get("cpu_model") or device)


def _features(r: dict[str, Any]) -> str:
    isa = (r.get("stamp") or {}).get("isa") or {}
    order = [f for f in FEATURES if f in isa] + sorted(f for f in isa if f not in FEATURES and f != "asimd")
    return " ".join(("+" if isa.get(f) else "-") + f for f in order) or "-"


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _diff(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}"


def compared(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (device, runtime, file) that was compared with the host or ran device_tests."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        if r.get("error") or (r.get("host_agreement") is None and not r.get("device_tests") and not r.get("host_error")):
            continue
        seen.setdefault((r.get("device"), r.get("runtime"), r.get("variant"), r.get("round")), r)
    return sorted(seen.values(), key=lambda r: (str(r.get("device")), str(r.get("runtime")), str(r.get("variant"))))


def _suite(r: dict[str, Any]) -> str:
    d = r.get("device_tests")
    if not d:
        return "not run"
    text = f"{d['verdict']} ({d['passed']}/{d['failed']}/{d['skipped']})"
    return text + (f": {d['why'][0]}" if d["verdict"] != "pass" and d.get("why") else "")


def fidelity_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per device, runtime and file: accuracy, macro-F1 and agreement with the host, device_tests."""
    header = ["device", "CPU features seen", "runtime", "file", "rows", "accuracy", "macro-F1", "host accuracy", "agreement with host",
              "max |logit diff|", "device_tests (pass/fail/skip)", "why"]
    body = []
    for r in compared(rows):
        body.append([str(r.get("device")), _features(r), str(r.get("runtime")), str(r.get("variant")), str(r.get("eval_rows") or "-"),
                     _pct(r.get("accuracy")), _diff(r.get("macro_f1")), _host_acc(r), _pct(r.get("host_agreement")),
                     _diff(r.get("host_max_abs_diff")), _suite(r), diagnose(r, rows) or (r.get("host_error") or "")])
    return header, body


def _host_acc(r: dict[str, Any]) -> str:
    """The host's accuracy, naming its runtime when it is not the device's (tflite-runtime: LiteRT)."""
    other = r.get("host_runtime") and r.get("host_runtime") != r.get("runtime")
    return _pct(r.get("host_accuracy")) + (f" ({r['host_runtime']})" if other and r.get("host_accuracy") is not None else "")


def _twin(r: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fp32 file of the same format on the same device and runtime (the plain one first)."""
    cands = [x for x in compared(rows) if x.get("device") == r.get("device") and x.get("runtime") == r.get("runtime")
             and x.get("format") == r.get("format") and x.get("precision") == "fp32" and x.get("host_agreement") is not None]
    return min(cands, key=lambda x: (x.get("variant") != f"{x.get('format')}-fp32", str(x.get("variant"))), default=None)


def _threshold(r: dict[str, Any]) -> float:
    return float(r.get("min_agreement") if r.get("min_agreement") is not None else 1.0)


def diagnose(r: dict[str, Any], rows: list[dict[str, Any]]) -> str | None:
    """Plain words on why a file's answers differ from the host's, or None when they do not."""
    agr = r.get("host_agreement")
    if agr is None or (agr >= _threshold(r) and not r.get("host_disagreements")):
        return None
    twin = _twin(r, rows)
    if r.get("precision") == "fp32" or (
        twin is not None and (twin["host_agreement"] < 1.0 or (twin.get("host_max_abs_diff") or 0) > FP32_CLOSE)
    ):
        return "emulator fault likely: fp32 answers differ from the host under this CPU model too"
    cpu = _cpu(r)
    if cpu.startswith("max") and "sme=off" not in cpu and sme_refusal(parse_cpu(cpu), str((r.get("stamp") or {}).get("qemu") or "")):
        return "emulator fault: this qemu's SME emulation is known wrong (run forced by ALBERT_EDGE_QEMU_SME_OK); use a newer qemu"
    if cpu.startswith("max") and "sme=off" not in cpu:
        sib = next(
            (
                x
                for x in compared(rows)
                if _cpu(x) == "max,sme=off"
                and x.get("variant") == r.get("variant")
                and x.get("runtime") == r.get("runtime")
                and (x.get("stamp") or {}).get("qemu") == (r.get("stamp") or {}).get("qemu")
            ),
            None,
        )
        if sib is not None and (sib.get("host_agreement") or 0) >= _threshold(sib):
            return ("the SME path: the same file agrees with sme=off; SME kernel or this qemu's SME emulation "
                    "(only another qemu or an SME board tells which)")
    other = next((x for x in compared(rows) if x.get("device") == r.get("device") and x.get("variant") == r.get("variant")
                  and x.get("runtime") != r.get("runtime") and (x.get("host_agreement") or 0) >= max(_threshold(x), agr + 1e-9)), None)
    if other is not None:
        return (f"{r.get('runtime')}'s own kernels: {other.get('runtime')} runs the same file under the same CPU model "
                f"and agrees {100 * other['host_agreement']:.1f} % with the host")
    base = "int8 kernel path or this qemu's emulation of its instructions (the fp32 twin matches, so float emulation is sound)"
    return base + "; one qemu cannot tell these apart: rerun with a newer qemu (QEMU_AARCH64) or on a board"


def matrix_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Per reduced-precision file and runtime, accuracy and host agreement under each CPU model,
    and the lowest agreement between any two of them (host included) on the same rows; a file
    under the parity threshold there is flagged `kernel-dependent`."""
    ok = [r for r in compared(rows) if r.get("host_agreement") is not None and r.get("precision") != "fp32"]
    cpus = sorted({_cpu(r) for r in ok})
    files = sorted({(str(r.get("variant")), str(r.get("runtime"))) for r in ok})
    feats = {c: _features(next(r for r in ok if _cpu(r) == c)) for c in cpus}
    header = ["file", "runtime", "host accuracy", *[f"{c} ({feats[c]}): acc / agree with host / device_tests" for c in cpus],
              "lowest pairwise agreement", "flag"]
    body = []
    for variant, runtime in files:
        mine = {_cpu(r): r for r in ok if str(r.get("variant")) == variant and str(r.get("runtime")) == runtime}
        cells = [
            f"{_pct(mine[c].get('accuracy'))} / {_pct(mine[c].get('host_agreement'))} / "
            f"{(mine[c].get('device_tests') or {}).get('verdict', 'not run')}"
            if c in mine
            else "-"
            for c in cpus
        ]
        low = lowest_pairwise(list(mine.values()))
        threshold = min((_threshold(r) for r in mine.values()), default=1.0)
        flag = "kernel-dependent" if low is not None and low < threshold else ""
        host = next((r.get("host_accuracy") for r in mine.values() if r.get("host_accuracy") is not None), None)
        body.append([variant, runtime, _pct(host), *cells, _pct(low), flag])
    return header, body


def lowest_pairwise(rs: list[dict[str, Any]]) -> float | None:
    """The lowest argmax agreement between any two runs (and each with the host) on identical rows."""
    lows = [r["host_agreement"] for r in rs if r.get("host_agreement") is not None]
    for i, a in enumerate(rs):
        for b in rs[i + 1:]:
            pa, pb = a.get("preds_real"), b.get("preds_real")
            if pa and pb and len(pa) == len(pb) and a.get("sample_rows") == b.get("sample_rows"):
                lows.append(sum(x == y for x, y in zip(pa, pb)) / len(pa))
    return min(lows, default=None)


def disagreement_table(rows: list[dict[str, Any]], limit: int = 40) -> tuple[list[str], list[list[str]]]:
    """Eval rows where a device and the host predicted differently (row = position in the eval set)."""
    header = ["device", "runtime", "file", "eval row", "label", "host", "device says", "max |logit diff|"]
    body = []
    for r in compared(rows):
        for d in (r.get("disagreements") or [])[:limit]:
            body.append([str(r.get("device")), str(r.get("runtime")), str(r.get("variant")), str(d["row"]), str(d.get("label")),
                         str(d["host"]), str(d["device"]), _diff(d.get("max_abs_diff"))])
    return header, body


def sections(rows: list[dict[str, Any]]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's device-fidelity tables that have anything in them."""
    out = []
    for title, (header, body) in (
        ("Answers on each device against this host (same file, same rows, batch 1, real lengths)", fidelity_table(rows)),
        ("CPU-feature matrix: reduced-precision files under each CPU model", matrix_table(rows)),
        ("Rows where a device and this host disagree", disagreement_table(rows)),
    ):
        if body:
            out.append((title, header, body))
    return out
