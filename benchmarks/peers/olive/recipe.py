"""Microsoft Olive: the CPU recipe for a BERT-class classifier from Olive's own workflow config
(teacher.json / student.json beside this file): ONNX conversion, ONNX Runtime transformer
optimisation (model_type bert: ALBERT's encoder is BERT's), dynamic int8 quantisation and ONNX
Runtime session-parameter tuning.

Olive's published BERT example quantises statically with a Hugging Face dataset for calibration
and evaluates with another; the hubs are not reachable from where this runs and calibrating on
the dev rows would leak them, so the recipe uses Olive's data-free dynamic quantisation pass.
Teacher: Olive's own HfModel conversion. Student: Olive cannot load a sliced (structurally
pruned) model, so its input is albert-edge's fp32 ONNX of the student (an ONNXModel).

    .peers/olive/bin/python benchmarks/peers/olive/recipe.py --role teacher --model-dir DIR --out OUT
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from benchmarks.peers.recipe_common import Recorder, dist_versions, parse_args  # noqa: E402


def workflow(role: str, model_dir: Path, onnx: Path | None, out: Path, threads: int) -> dict:
    """The committed workflow config with this run's paths filled in."""
    text = (HERE / f"{role}.json").read_text()
    for key, value in (("${MODEL_DIR}", str(model_dir)), ("${ONNX}", str(onnx or "")), ("${OUT}", str(out))):
        text = text.replace(key, value)
    config = json.loads(text.replace('"${THREADS}"', str(threads)))
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args("olive", argv)
    rec = Recorder("olive", args, dist_versions("olive-ai", "onnxruntime", "onnx", "transformers", "torch", "onnxscript"))
    role = "student" if args.role == "student" and args.onnx is not None else "teacher"
    threads = int(os.environ.get("PEER_THREADS", "2"))
    config = workflow(role, args.model_dir, args.onnx, rec.out.resolve(), threads)
    (rec.out / "workflow.json").write_text(json.dumps(config, indent=2))
    rec.note(f"workflow: benchmarks/peers/olive/{role}.json ({' -> '.join(config['passes'])})")
    if role == "student":
        rec.note("student: albert-edge's fp32 ONNX as Olive's ONNXModel input (Olive cannot load a sliced model)")
    shutil.rmtree(rec.out / "output", ignore_errors=True)
    with rec.step("workflow"):
        from olive.workflows import run as olive_run

        olive_run(config)
    found = sorted(p for p in (rec.out / "output").rglob("*.onnx"))
    if not found:
        rec.data["errors"].append({"step": "workflow", "error": f"no .onnx under {rec.out / 'output'}"})
        rec.write()
        return 4
    for cfg_file in sorted((rec.out / "output").rglob("*.json")):
        try:
            data = json.loads(cfg_file.read_text())
        except ValueError:
            continue
        settings = data.get("inference_settings") or (data.get("config") or {}).get("inference_settings")
        if settings:
            rec.data["inference_settings"] = settings
            rec.note(f"Olive's tuned session settings (threads are fixed by the harness): {json.dumps(settings)[:300]}")
            break
    rec.add("olive-int8", found[0], "onnx", "int8-dynamic", ["workflow"])
    rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
