"""`backend: inc`: Intel Neural Compressor's accuracy-driven ONNX tuning (onnx-neural-compressor 1.x).

What works here (measured, Python 3.11, numpy 2.4, onnxruntime 1.32): onnx-neural-compressor
1.0 installed with `--no-deps` (its metadata pins numpy<2, yet it runs on numpy 2) plus
prettytable, py-cpuinfo, psutil and scipy. neural-compressor 3.x ships no ONNX backend;
neural-compressor 2.6 pins numpy<2, needs pkg_resources (setuptools<81) and six, and then
fails inside its ONNX adaptor on onnx 1.23 (`onnx.mapping` was removed).

INC's tuning walks a set of whole-model configs (op-type subsets, per-channel, last MatMul
int8 or not) and stops at the first whose accuracy is within a relative tolerance of the
fp32 baseline. Its `autotune` calls `exit(0)` when no config qualifies; that is caught here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from albert_edge.data import Encoded
from compress.onnx_int8 import Scheme, calibration_reader

if TYPE_CHECKING:
    from export.judge import FileJudge

INSTALL_HINT = ("pip install -c constraints.txt --no-deps onnx-neural-compressor==1.0 && "
                "pip install -c constraints.txt prettytable py-cpuinfo psutil scipy")


def inc_missing() -> str:
    """'' when onnx-neural-compressor imports here, else why not and how to install it."""
    if importlib.util.find_spec("onnx_neural_compressor") is None:
        return f"onnx-neural-compressor is not installed ({INSTALL_HINT})"
    try:
        from onnx_neural_compressor.quantization import config, tuning  # noqa: F401
    except Exception as err:  # a missing undeclared dependency (prettytable, scipy, cpuinfo)
        return f"onnx-neural-compressor fails to import ({type(err).__name__}: {err}); {INSTALL_HINT}"
    return ""


@dataclass
class IncResult:
    """INC's pick: whether a trial met the tolerance, and every trial's accuracy."""

    met: bool
    trials: list[float] = field(default_factory=list)
    baseline: float | None = None
    config: str = ""


def inc_tune(
    src: Path,
    dst: Path,
    mode: Scheme,
    evaluate: Callable[[str], float],
    *,
    tolerance: float,
    max_trials: int,
    calib: Encoded | None = None,
    pad_id: int = 0,
) -> IncResult:
    """Run INC accuracy-driven tuning on the pre-optimised fp32 graph `src`; write its pick to
    `dst`. `evaluate(path) -> accuracy` is our eval-set accuracy of a file."""
    import onnx
    import onnxruntime as ort
    from onnx_neural_compressor.quantization import config, tuning
    from onnxruntime.quantization import QuantFormat, QuantType

    ep = "CPUExecutionProvider"
    if mode == "static":
        if calib is None:
            raise ValueError("static int8 needs calibration examples")
        configs = config.StaticQuantConfig.get_config_set_for_tuning(
            quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            execution_provider=ep, calibration_sampling_size=len(calib))
        reader = calibration_reader(calib, pad_id=pad_id)
    else:
        configs = config.DynamicQuantConfig.get_config_set_for_tuning(weight_type=QuantType.QInt8, execution_provider=ep)
        reader = None
    seen: list[float] = []

    def eval_fn(path: str) -> float:
        acc = float(evaluate(path))
        seen.append(acc)
        return acc

    tune = tuning.TuningConfig(config_set=configs, tolerable_loss=tolerance, max_trials=max_trials)
    try:
        best = tuning.autotune(str(src), tune, eval_fn, calibration_data_reader=reader,
                               optimization_level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    except SystemExit:  # INC exits when no config is within tolerance
        best = None
    baseline, trials = (seen[0], seen[1:]) if seen else (None, [])
    if best is None:
        return IncResult(False, trials, baseline)
    onnx.save(best, str(dst))
    met = baseline is not None and bool(trials) and trials[-1] >= baseline * (1 - tolerance)
    return IncResult(met, trials, baseline, f"trial {len(trials)} of {len(configs) if isinstance(configs, list) else 1} config groups")


def inc_int8(judge: FileJudge, name: str, src: Path, dst: Path, mode: Scheme, *, calib: Encoded | None,
             max_trials: int) -> dict[str, Any]:
    """INC's accuracy-driven tuning of `src` into `dst` within the budget's tolerance (the
    absolute budget against the teacher read as INC's relative loss against the fp32 model,
    albert_edge.budget.inc_tolerance), each trial judged on the validation rows; what it tried,
    for the manifest. Int8Error when no config kept accuracy within the budget."""
    from albert_edge.budget import inc_tolerance
    from compress.onnx_int8 import Int8Error

    tol = inc_tolerance(judge.budget, judge.fp32_accuracy, judge.reference)
    res = inc_tune(src, dst, mode, lambda p: judge.judge_file(name, Path(p)).accuracy, tolerance=tol,
                   max_trials=max_trials, calib=calib, pad_id=judge.pad_id)
    if not dst.is_file():
        raise Int8Error(f"{name}: INC tried {len(res.trials)} configs and none kept accuracy within the budget "
                        f"(trial accuracies {[round(a, 4) for a in res.trials]}, fp32 {res.baseline})")
    return {"met_tolerance": res.met, "tolerable_loss": round(tol, 6), "baseline": res.baseline, "trials": res.trials,
            "tuned_on": "validation"}
