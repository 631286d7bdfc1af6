"""Gradual magnitude pruning (Zhu & Gupta, 2017): sparsity rises along a cubic schedule while
the model fine-tunes, then the last steps train at the final sparsity."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from sparse_tvm.pruning.patterns import Pattern, global_masks
from sparse_tvm.pruning.weights import PrunableWeight


def cubic_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3``, held outside
    ``[begin, end]``."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    progress = (step - begin) / (end - begin)
    return final + (initial - final) * (1.0 - progress) ** 3


def magnitude_masks(
    weights: dict[str, np.ndarray],
    prunable: list[PrunableWeight],
    sparsity: float,
    pattern: Pattern,
    scope: str,
) -> dict[str, np.ndarray]:
    """Keep-masks (stored layout) of the ``prunable`` weights by magnitude, per layer or global."""
    views = {w.name: w.to_nk(weights[w.name]) for w in prunable}
    if scope == "global":
        nk_masks = global_masks(views, sparsity, pattern)
    else:
        nk_masks = {name: pattern.mask(np.abs(v), sparsity) for name, v in views.items()}
    return {
        w.name: w.from_nk(nk_masks[w.name].astype(np.float32), weights[w.name]) for w in prunable
    }


def gmp_hook(
    trainer,
    prunable: list[PrunableWeight],
    sparsity: float,
    pattern: Pattern,
    scope: str,
    ramp: float = 0.75,
    updates: int = 20,
) -> Callable[[int, int], None]:
    """An ``on_step`` hook: recompute the masks every ``end / updates`` steps until
    ``end = ramp * total`` steps, at the cubic schedule's sparsity."""

    def on_step(step: int, total: int) -> None:
        end = max(1, int(ramp * total))
        every = max(1, end // updates)
        if step > end or (step % every and step != end):
            return
        target = cubic_sparsity(step, sparsity, 0, end)
        trainer.masks.update(magnitude_masks(trainer.weights, prunable, target, pattern, scope))
        for w in prunable:
            trainer.weights[w.name] = trainer.weights[w.name] * trainer.masks[w.name]

    return on_step
