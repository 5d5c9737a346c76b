"""`benchmark`: every bundle file measured on each configured device by the harness
(benchmarks.harness), the rows written to results.jsonl."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from albert_edge.contract import StageContext, StageError
from albert_edge.data import EVAL_NPZ, encoded_to_npz
from albert_edge.registry import stage
from benchmarks.devices.base import DeviceError
from benchmarks.devices.scratch import scratch_dir
from benchmarks.harness import RESULTS, BenchConfig, BundleError, Target, benchmark, bundle_targets, find_bundle, summarise, write_results
from benchmarks.provenance import run_stamp
from edge_runtime.measure import synthetic_npz


@stage("benchmark", config=BenchConfig, version="1", inputs=("bundle", "?teacher", "?model"), output="bench")
def benchmark_stage(ctx: StageContext[BenchConfig]) -> dict[str, Any]:
    """Latency, load time, peak memory, size and accuracy of every bundle file on each device."""

    cfg: BenchConfig = ctx.config
    bundle = find_bundle(ctx.inputs["bundle"].path)
    try:
        targets = bundle_targets(bundle)
    except BundleError as err:
        raise StageError(str(err)) from None
    model_art = ctx.inputs.get("model")
    if "torch" in cfg.runtimes and model_art is not None and model_art.model_dir.is_dir():
        targets.append(Target("torch-eager", "torch", "fp32", [model_art.model_dir], {}))
    if not targets:
        raise StageError(f"{bundle}: no model files to benchmark")
    with scratch_dir("inputs") as tmp:
        inputs = stage_inputs(ctx, bundle, model_art, tmp / "inputs.npz")
        keys = {role: a.key for role, a in ctx.inputs.items() if a is not None and not isinstance(a, list)}
        extra = {
            "artifact": ctx.inputs["bundle"].step,
            "random_weights": bool(ctx.pipeline.random_weights),
            **run_stamp(ctx.pipeline, keys),
            "min_agreement": ctx.pipeline.budget.min_agreement,
        }
        try:
            rows = benchmark(targets, inputs, cfg, extra, ctx.log, {"benchmark_model": cfg.benchmark_model}, bundle)
        except DeviceError as err:
            raise StageError(str(err)) from None
    for r in rows:
        r["teacher_accuracy"] = ctx.teacher_accuracy
    write_results(rows, ctx.out_dir)
    ctx.info["results"] = RESULTS
    return summarise(rows)


def stage_inputs(ctx: StageContext[Any], bundle: Path, model_art: Any, dest: Path) -> Path:
    """The bundle's eval.npz, else the pipeline's eval split tokenised with the bundle's (or the
    exported model's) tokenizer, with the teacher's predictions for agreement."""
    from albert_edge.data import encode, read_examples
    from albert_edge.metrics import load_predictions

    if (bundle / EVAL_NPZ).is_file():
        shutil.copy2(bundle / EVAL_NPZ, dest)
        return dest
    tok_dir = next((p.parent for p in sorted(bundle.rglob("tokenizer_config.json"))), None)
    if tok_dir is None and model_art is not None:
        tok_dir = model_art.model_dir
    if tok_dir is None:
        ctx.log.info("  no tokenizer in the bundle: timing random token ids, no accuracy")
        return synthetic_npz(dest, width=max(ctx.config.seq_lens))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    enc = encode(tok, read_examples(ctx.pipeline.task, "eval"), ctx.pipeline.task.max_seq_len)
    teacher = ctx.teacher
    preds = load_predictions(teacher.path if teacher is not None else None)
    return encoded_to_npz(enc.input_ids, enc.token_type_ids, enc.labels, dest, preds)
