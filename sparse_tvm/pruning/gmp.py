"""Gradual magnitude pruning (Zhu & Gupta, 2017): sparsity rises along a cubic schedule while
the model fine-tunes, then the last steps train at the final sparsity."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sparse_tvm.pruning.one_shot import MagnitudeSparsifier
from sparse_tvm.pruning.patterns import Pattern


def cubic_sparsity(step: int, final: float, begin: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3``, held outside
    ``[begin, end]``."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    progress = (step - begin) / (end - begin)
    return final + (initial - final) * (1.0 - progress) ** 3


class GMPSparsifier(MagnitudeSparsifier):
    """Magnitude masks along the cubic schedule: recomputed every ``end / updates`` steps
    until ``end = ramp * total`` steps; ``squash_mask`` fixes the final masks first.

    ``ramp`` and ``updates`` are Zhu & Gupta's pruning end and frequency as shares of the
    run, so one setting serves any number of epochs."""

    def __init__(
        self,
        sparsity: float,
        pattern: str | Pattern = "1x1",
        scope: str = "layer",
        ramp: float = 0.75,
        updates: int = 20,
        patterns: Mapping[str, str | Pattern] | None = None,
    ):
        super().__init__(sparsity, pattern, scope, patterns)
        self.ramp, self.updates = ramp, updates

    def step(self, step: int | None = None, total: int | None = None) -> None:
        """The schedule's masks at ``step`` of ``total`` (on its update steps only); without
        ``step``, the masks at the final sparsity."""
        if step is None or total is None:
            self.update_masks(self.sparsity)
            return
        end = max(1, int(self.ramp * total))
        every = max(1, end // self.updates)
        if step > end or (step % every and step != end):
            return
        self.update_masks(cubic_sparsity(step, self.sparsity, 0, end))

    def squash_mask(self) -> dict[str, np.ndarray]:
        # the schedule ends at the final sparsity, but the weights moved since its last update
        self.step()
        return super().squash_mask()


__all__ = ["GMPSparsifier", "cubic_sparsity"]
