"""Google AI Edge: litert-torch converts the model at one fixed shape (--seq-len, 128: what a
user gets without albert-edge's sequence buckets), then ai-edge-quantizer's dynamic int8 recipe
(dynamic_wi8_afp32, unmodified). Files run in LiteRT (ai-edge-litert).

Teacher: transformers from_pretrained. Student: albert_edge.models.load_model (the worktree on
PYTHONPATH), the only loader of a sliced model.

    .peers/aiedge/bin/python benchmarks/peers/aiedge/recipe.py --role teacher --model-dir DIR --out OUT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.peers.recipe_common import Recorder, dist_versions, load_torch_model, logits_module, parse_args, sample_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    args = parse_args("aiedge", argv)
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    rec = Recorder("aiedge", args, dist_versions("litert-torch", "ai-edge-quantizer", "ai-edge-litert", "torch", "transformers"))
    with rec.step("load"):
        model, route = load_torch_model(args.model_dir)
        rec.note(f"loaded with {route}")
    fp32 = rec.out / f"model-fp32-s{args.seq_len}.tflite"
    with rec.step("convert"):
        import litert_torch
        import torch

        with torch.no_grad():
            litert_torch.convert(logits_module(model), sample_inputs(args.seq_len)).export(str(fp32))
    rec.add(f"aiedge-fp32-s{args.seq_len}", fp32, "tflite", "fp32", ["load", "convert"], seq_len=args.seq_len)
    int8 = rec.out / f"model-int8-dynamic-s{args.seq_len}.tflite"
    with rec.step("quantize"):
        from ai_edge_quantizer import quantizer, recipe

        qt = quantizer.Quantizer(str(fp32))
        qt.load_quantization_recipe(recipe.dynamic_wi8_afp32())
        qt.quantize().export_model(str(int8), overwrite=True)
    rec.add(f"aiedge-int8-dynamic-s{args.seq_len}", int8, "tflite", "int8-dynamic", ["load", "convert", "quantize"], seq_len=args.seq_len)
    rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
