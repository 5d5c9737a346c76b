"""The device runtime: open a model file in ONNX Runtime, LiteRT or tflite-runtime, pick a
sequence bucket, time it and read memory, with numpy and one runtime only.

This package is shipped to devices as it is (beside benchmarks/measure.py and the device_tests
suite), so it imports nothing from the rest of albert-edge and never torch. The host runs the same
code for parity checks, bundles and benchmarks, so a device runs exactly what was validated.
"""

from edge_runtime.models import (
    INPUT_NAMES,
    ORT_LEVELS,
    RUNTIME_MODULES,
    SIGNATURE_PREFIX,
    TFLITE_RUNTIMES,
    EdgeModel,
    ModelLoadError,
    fit_length,
    open_model,
    ort_session,
    pick_bucket,
    real_length,
    runtime_available,
    runtime_for,
    runtime_version,
    tflite_buckets,
    tflite_interpreter,
    tflite_runtime_numpy_problem,
)

__all__ = [
    "INPUT_NAMES", "ORT_LEVELS", "RUNTIME_MODULES", "SIGNATURE_PREFIX", "TFLITE_RUNTIMES", "EdgeModel", "ModelLoadError", "fit_length",
    "open_model", "ort_session", "pick_bucket", "real_length", "runtime_available", "runtime_for", "runtime_version", "tflite_buckets",
    "tflite_interpreter", "tflite_runtime_numpy_problem",
]
