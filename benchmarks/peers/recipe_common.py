"""What every peer recipe shares: its command line, timing of each tool step, and the one JSON
file (peer.json) that tells run.py which model files the tool wrote.

Standard library only: recipes run in the peer's own venv, where albert-edge's dependencies are
not installed. The worktree is on PYTHONPATH there, so a recipe may import albert_edge lazily to
load a structurally pruned student that no peer can read itself.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata as md
import json
import platform
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RESULT = "peer.json"


def parse_args(peer: str, argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=f"{peer} recipe: convert one model and write {RESULT}")
    p.add_argument("--role", choices=("teacher", "student"), required=True)
    p.add_argument("--model-dir", type=Path, required=True, help="the HF-format model directory (save_model's output)")
    p.add_argument(
        "--onnx",
        type=Path,
        default=None,
        help="albert-edge's fp32 ONNX of the same model (ORT-based peers start from it for a sliced student)",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seq-len", type=int, default=128, help="fixed-shape exports run at this width")
    p.add_argument("--isa", default="avx2", help="host ISA for ORT quantization configs: avx2, avx512, avx512_vnni")
    return p.parse_args(argv)


def dist_versions(*names: str) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def is_sliced(model_dir: Path) -> bool:
    """A structurally pruned model: its Linear shapes differ from its config, so only
    albert_edge.models.load_model can build it."""
    try:
        return bool(json.loads((Path(model_dir) / "config.json").read_text()).get("sliced_linears"))
    except (OSError, ValueError):
        return False


def load_torch_model(model_dir: Path) -> tuple[Any, str]:
    """(eval-mode torch model, how it was loaded). A user's route for a plain HF directory
    (from_pretrained); albert-edge's loader for a sliced one (nothing else can read it)."""
    if is_sliced(model_dir):
        from albert_edge.models import load_model

        return load_model(Path(model_dir))[0], "albert_edge.models.load_model (sliced student: no from_pretrained route)"
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), attn_implementation="eager").eval()
    return model, "transformers AutoModelForSequenceClassification.from_pretrained (eager attention)"


def logits_module(model: Any, additive_mask: bool = False) -> Any:
    """(input_ids, attention_mask, token_type_ids) -> logits: the plain call a user would export.
    additive_mask: build the 4-D additive mask here (transformers passes a ready 4-D mask through)
    instead of letting transformers expand the 2-D one, for tools whose passes break on that
    expansion's index ops."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            mask = attention_mask
            if additive_mask:
                mask = (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
            return self.inner(input_ids=input_ids, attention_mask=mask, token_type_ids=token_type_ids).logits

    return Logits(model).eval()


def sample_inputs(seq_len: int, dtype: str = "int64") -> tuple[Any, Any, Any]:
    import torch

    dt = getattr(torch, dtype)
    ids = torch.randint(5, 1000, (1, seq_len), dtype=dt)
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


class Recorder:
    """Collects the files a recipe writes, the wall time of each tool step and any failure,
    and writes them to OUT/peer.json (also when a step raises)."""

    def __init__(self, peer: str, args: argparse.Namespace, versions: dict[str, str | None]) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, Any] = {
            "peer": peer, "role": args.role, "model_dir": str(args.model_dir), "onnx": str(args.onnx) if args.onnx else None,
            "python": sys.version.split()[0], "machine": platform.machine(), "versions": versions, "files": [], "steps": {},
            "errors": [], "notes": [], "ok": False,
        }
        self.t0 = time.perf_counter()

    @contextlib.contextmanager
    def step(self, name: str, required: bool = True) -> Iterator[None]:
        """Time one tool step; a failure is recorded (with its first line) and, if `required`,
        ends the recipe after writing peer.json."""
        t = time.perf_counter()
        try:
            yield
        except Exception as err:
            self.data["steps"][name] = round(time.perf_counter() - t, 3)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:400]
            self.data["errors"].append({"step": name, "error": f"{type(err).__name__}: {first}"})
            traceback.print_exc()
            if required:
                self.write()
                raise SystemExit(4) from None
            return
        self.data["steps"][name] = round(time.perf_counter() - t, 3)

    def note(self, text: str) -> None:
        self.data["notes"].append(text)

    def add(self, name: str, path: Path, fmt: str, precision: str, steps: list[str], seq_len: int | None = None,
            arm_only: bool = False, **extra: Any) -> None:
        """One model file the tool made; `steps` are the tool steps that produced it (their wall
        times add up to the file's tool time)."""
        path = Path(path)
        if not path.is_file():
            self.data["errors"].append({"step": name, "error": f"the tool wrote no {path.name}"})
            return
        self.data["files"].append({
            "name": name, "file": str(path.relative_to(self.out)), "format": fmt, "precision": precision, "seq_len": seq_len,
            "size_bytes": path.stat().st_size, "tool_s": round(sum(self.data["steps"].get(s, 0.0) for s in steps), 3), "steps": steps,
            "arm_only": arm_only, **extra,
        })

    def write(self) -> Path:
        self.data["wall_s"] = round(time.perf_counter() - self.t0, 3)
        self.data["ok"] = bool(self.data["files"])
        path = self.out / RESULT
        path.write_text(json.dumps(self.data, indent=2, default=str))
        return path
