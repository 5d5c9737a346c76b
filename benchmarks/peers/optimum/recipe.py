"""Hugging Face Optimum (ONNX Runtime): export, ORTOptimizer at its highest CPU level that runs,
ORTQuantizer dynamic int8 with the AutoQuantizationConfig that fits the host, and arm64.

Teacher: Optimum's own export (ORTModelForSequenceClassification.from_pretrained(export=True)).
Student: Optimum cannot load a sliced (structurally pruned) model, so it starts from
albert-edge's fp32 ONNX of the student (the export_onnx artifact) with the student's config.json;
from there every step is Optimum's.

    .peers/optimum/bin/python benchmarks/peers/optimum/recipe.py --role teacher --model-dir DIR --out OUT --isa avx512_vnni
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.peers.recipe_common import Recorder, parse_args  # noqa: E402

# O4 adds fp16 (GPU only); O3 is the highest level for CPU. Lower levels are tried if it fails.
LEVELS = ("O3", "O2", "O1")


def main(argv: list[str] | None = None) -> int:
    args = parse_args("optimum", argv)
    from benchmarks.peers.recipe_common import dist_versions

    rec = Recorder("optimum", args, dist_versions("optimum-onnx", "optimum", "onnxruntime", "onnx", "transformers", "torch"))
    from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    export_dir = rec.out / "export"
    with rec.step("export"):
        if args.role == "teacher" or args.onnx is None:
            model = ORTModelForSequenceClassification.from_pretrained(str(args.model_dir), export=True)
            model.save_pretrained(str(export_dir))
            rec.note("teacher: Optimum's own ONNX export")
        else:
            export_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(args.onnx, export_dir / "model.onnx")
            shutil.copyfile(Path(args.model_dir) / "config.json", export_dir / "config.json")
            model = ORTModelForSequenceClassification.from_pretrained(str(export_dir))
            rec.note("student: albert-edge's fp32 ONNX (Optimum cannot load a sliced model), then Optimum's optimizer and quantizer")
    rec.add("optimum-fp32", export_dir / "model.onnx", "onnx", "fp32", ["export"])

    opt_dir, level = rec.out / "optimized", None
    for lv in LEVELS:
        with rec.step(f"optimize-{lv}", required=False):
            shutil.rmtree(opt_dir, ignore_errors=True)
            ORTOptimizer.from_pretrained(model).optimize(save_dir=str(opt_dir), optimization_config=getattr(AutoOptimizationConfig, lv)())
            level = lv
        if level:
            break
    if level is None:
        rec.write()
        return 4
    rec.data["optimization_level"] = level
    opt_file = opt_dir / "model_optimized.onnx"
    rec.add(f"optimum-{level}-fp32", opt_file, "onnx", "fp32", ["export", f"optimize-{level}"])

    for isa, arm in ((args.isa, False), ("arm64", True)):
        step = f"quantize-{isa}"
        q_dir = rec.out / f"quantized-{isa}"
        with rec.step(step, required=not arm):
            qconfig = getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=False)
            ORTQuantizer.from_pretrained(str(opt_dir), file_name=opt_file.name).quantize(save_dir=str(q_dir), quantization_config=qconfig)
        files = sorted(q_dir.glob("*quantized*.onnx")) if q_dir.is_dir() else []
        if files:
            rec.add(f"optimum-{level}-int8-{isa}", files[0], "onnx", "int8-dynamic", ["export", f"optimize-{level}", step], arm_only=arm)
    rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
