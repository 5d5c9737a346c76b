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

    # The highest level whose output ORTQuantizer can also quantize: fused contrib ops (FastGelu at
    # O2/O3) can defeat the quantizer's shape inference, and a user then steps down a level.
    best_fp32, int8_level = None, None
    for lv in LEVELS:
        opt_dir = rec.out / f"optimized-{lv}"
        with rec.step(f"optimize-{lv}", required=False):
            ORTOptimizer.from_pretrained(model).optimize(save_dir=str(opt_dir), optimization_config=getattr(AutoOptimizationConfig, lv)())
        opt_file = opt_dir / "model_optimized.onnx"
        if not opt_file.is_file():
            continue
        if best_fp32 is None:
            best_fp32 = lv
            rec.add(f"optimum-{lv}-fp32", opt_file, "onnx", "fp32", ["export", f"optimize-{lv}"])
        step = f"quantize-{lv}-{args.isa}"
        with rec.step(step, required=False):
            qconfig = getattr(AutoQuantizationConfig, args.isa)(is_static=False, per_channel=False)
            ORTQuantizer.from_pretrained(str(opt_dir), file_name=opt_file.name).quantize(save_dir=str(rec.out / f"q-{lv}-{args.isa}"),
                                                                                          quantization_config=qconfig)
        files = sorted((rec.out / f"q-{lv}-{args.isa}").glob("*quantized*.onnx"))
        if files:
            int8_level = lv
            rec.add(f"optimum-{lv}-int8-{args.isa}", files[0], "onnx", "int8-dynamic", ["export", f"optimize-{lv}", step])
            arm = f"quantize-{lv}-arm64"
            with rec.step(arm, required=False):
                ORTQuantizer.from_pretrained(str(opt_dir), file_name=opt_file.name).quantize(
                    save_dir=str(rec.out / f"q-{lv}-arm64"),
                    quantization_config=AutoQuantizationConfig.arm64(is_static=False, per_channel=False),
                )
            arm_files = sorted((rec.out / f"q-{lv}-arm64").glob("*quantized*.onnx"))
            if arm_files:
                rec.add(f"optimum-{lv}-int8-arm64", arm_files[0], "onnx", "int8-dynamic", ["export", f"optimize-{lv}", arm], arm_only=True)
            break
        rec.note(f"ORTQuantizer could not quantize the {lv} graph: stepped down a level")
    rec.data["optimization_level"] = best_fp32
    rec.data["int8_optimization_level"] = int8_level
    rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
