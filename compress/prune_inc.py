"""`backend: inc` for prune: Intel Neural Compressor 2.x pattern pruners driven by our training loop.

INC's pruning lives in `neural_compressor.training` (releases 2.x up to 3.7; 3.8+ dropped it).
Every such release declares `numpy<2.0`, which this project's numpy-2 stack (jax, ml-dtypes,
ai-edge-litert) cannot satisfy, so it is an optional extra installed with --no-deps (see the
README). INC's callbacks are bound to the shared `train` loop through on_step: after each
optimiser step the gradients are still in place, so the score update, the masking and the
next step's schedule run there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from albert_edge.schema import require


@dataclass(frozen=True)
class IncConfig:
    """INC WeightPruningConfig knobs (see INC's pruning docs for patterns and pruning types)."""

    pattern: str = "4x1"  # NxM blocks, "channelx1" (whole output channels), "1xchannel"
    pruning_type: str = "snip_momentum"
    frequency: int = 10
    op_names: tuple[str, ...] = (r".*attention\.(query|key|value|dense)$", r".*\.ffn$", r".*\.ffn_output$")

    def check(self) -> None:
        require(self.frequency >= 1, "frequency", "prune at least every step")
        require(len(self.op_names) > 0, "op_names", "name at least one layer pattern")


def inc_version() -> str | None:
    import importlib.metadata as md

    try:
        return md.version("neural-compressor")
    except md.PackageNotFoundError:
        return None


class IncPruner:
    """on_step(step, total) adapter over INC's compression callbacks."""

    def __init__(self, model: Any, cfg: IncConfig, sparsity: float, start_step: int, end_step: int) -> None:
        try:
            from neural_compressor.training import WeightPruningConfig, prepare_compression
        except ImportError as err:
            raise ImportError(
                "backend: inc needs neural-compressor 2.x (`pip install --no-deps neural-compressor==2.6` plus its "
                "dependencies; see README) - or use backend: native"
            ) from err
        config = WeightPruningConfig(
            [{"op_names": list(cfg.op_names), "pattern": cfg.pattern, "target_sparsity": sparsity,
              "pruning_type": cfg.pruning_type, "start_step": start_step, "end_step": end_step}],
            pruning_frequency=cfg.frequency,
        )
        self.manager = prepare_compression(model, config)
        self.cb = self.manager.callbacks
        self.cb.on_train_begin()
        self.cb.on_step_begin(0)

    def on_step(self, step: int, total: int) -> None:
        self.cb.on_before_optimizer_step()
        self.cb.on_after_optimizer_step()  # INC applies its masks here
        self.cb.on_step_end()
        if step < total:
            self.cb.on_step_begin(step)

    def finish(self) -> None:
        self.cb.on_train_end()
