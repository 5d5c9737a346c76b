"""PyTorch ExecuTorch: torch.export, XNNPACK delegate (fp32), and XNNPACK's own int8 quantizer
through the pt2e flow (symmetric per-channel weights, dynamic activations: data-free like the
other peers' dynamic int8), lowered with to_edge_transform_and_lower and written as .pte files
that ExecuTorch's runtime runs (benchmarks/measure.py's `executorch` runtime).

The sequence length is exported dynamic (up to --seq-len) when torch.export accepts it, so real
lengths run unpadded; otherwise fixed at --seq-len (what the file records). Teacher: transformers
from_pretrained. Student: albert_edge.models.load_model (the worktree on PYTHONPATH), the only
loader of a sliced model.

    .peers/executorch/bin/python benchmarks/peers/executorch/recipe.py --role teacher --model-dir DIR --out OUT
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from benchmarks.peers.recipe_common import Recorder, dist_versions, load_torch_model, logits_module, parse_args, sample_inputs  # noqa: E402


def _lower(ep: Any, path: Path) -> None:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    prog = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
    path.write_bytes(prog.buffer)


def main(argv: list[str] | None = None) -> int:
    args = parse_args("executorch", argv)
    rec = Recorder("executorch", args, dist_versions("executorch", "torch", "torchao", "transformers"))
    with rec.step("import"):
        import torch
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

        try:
            from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
        except ImportError:
            from torch.ao.quantization.quantize_pt2e import convert_pt2e, prepare_pt2e
        from executorch.runtime import Runtime  # noqa: F401  (the runtime must load here too)
    with rec.step("load"):
        model, route = load_torch_model(args.model_dir)
        rec.note(f"loaded with {route}")
    # transformers' 2-D mask expansion traces to aten.index ops that XNNPACK's pt2e prepare breaks
    # ("IndexError: tensors used as indices must be long, int, byte or bool tensors" when the
    # prepared model runs); a 4-D additive mask built in the wrapper gives the same logits
    module = logits_module(model, additive_mask=True)
    rec.note("the wrapper builds the 4-D additive attention mask (pt2e prepare breaks on transformers' 2-D mask expansion)")
    example = sample_inputs(args.seq_len)
    seq = torch.export.Dim("seq", min=2, max=args.seq_len)
    dyn: Any = {"input_ids": {1: seq}, "attention_mask": {1: seq}, "token_type_ids": {1: seq}}
    with rec.step("export", required=False):
        with torch.no_grad():
            ep = torch.export.export(module, example, dynamic_shapes=dyn)
    if "export" not in rec.data["steps"] or rec.data["errors"]:
        rec.note(f"dynamic sequence length refused by torch.export: exporting fixed at {args.seq_len}")
        rec.data["errors"].clear()
        dyn = None
        with rec.step("export"), torch.no_grad():
            ep = torch.export.export(module, example)
    fixed = None if dyn else args.seq_len
    rec.data["dynamic_seq"] = dyn is not None
    tail = f"-s{fixed}" if fixed else ""  # measure.py pads inputs of a file named -s<width>.pte
    fp32 = rec.out / f"model-xnnpack-fp32{tail}.pte"
    with rec.step("lower-fp32"):
        _lower(ep, fp32)
    rec.add("executorch-xnnpack-fp32", fp32, "pte", "fp32", ["load", "export", "lower-fp32"], seq_len=fixed)
    int8 = rec.out / f"model-xnnpack-int8{tail}.pte"
    with rec.step("quantize-int8", required=False):
        quantizer = XNNPACKQuantizer()
        quantizer.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True))
        with torch.no_grad():
            m = prepare_pt2e(torch.export.export(module, example, dynamic_shapes=dyn).module(), quantizer)
            m(*example)
            m = convert_pt2e(m)
            qep = torch.export.export(m, example, dynamic_shapes=dyn)
    if "quantize-int8" in rec.data["steps"] and not any(e["step"] == "quantize-int8" for e in rec.data["errors"]):
        with rec.step("lower-int8", required=False):
            _lower(qep, int8)
        rec.add("executorch-xnnpack-int8", int8, "pte", "int8-dynamic", ["load", "quantize-int8", "lower-int8"], seq_len=fixed)
    rec.write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
