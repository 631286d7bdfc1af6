"""One-shot magnitude pruning as a :class:`~sparse_tvm.pruning.sparsifier.Sparsifier`: the
masks keep the weights (or blocks) of largest magnitude, per layer or with one global
threshold."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from sparse_tvm.frontend.initializers import PrunableWeight
from sparse_tvm.pruning.patterns import Pattern, global_masks, per_weight
from sparse_tvm.pruning.sparsifier import Sparsifier


def magnitude_masks(
    weights: dict[str, np.ndarray],
    prunable: list[PrunableWeight],
    sparsity: float,
    pattern: Pattern | Mapping[str, Pattern],
    scope: str,
) -> dict[str, np.ndarray]:
    """Keep-masks (stored layout) of the ``prunable`` weights by magnitude, per layer or global;
    ``pattern``: one for all, or by weight name."""
    views = {w.name: w.to_nk(weights[w.name]) for w in prunable}
    if scope == "global":
        nk_masks = global_masks(views, sparsity, pattern)
    else:
        patterns = per_weight(pattern, views)
        nk_masks = {name: patterns[name].mask(np.abs(v), sparsity) for name, v in views.items()}
    return {
        w.name: w.from_nk(nk_masks[w.name].astype(np.float32), weights[w.name]) for w in prunable
    }


class MagnitudeSparsifier(Sparsifier):
    """Masks by magnitude at the target sparsity, in one step (no data, no training)."""

    def update_masks(self, sparsity: float) -> None:
        """Masks by magnitude at ``sparsity``, applied to the weights at once (a pruned weight
        stays zero, so it scores lowest at the next update)."""
        self.mask.update(
            magnitude_masks(self.weights, self.prunable, sparsity, self.layer_patterns, self.scope)
        )
        for w in self.prunable:
            self.weights[w.name] = self.weights[w.name] * self.mask[w.name]

    def step(self, step: int | None = None, total: int | None = None) -> None:
        """The masks at the target sparsity (one shot: ``step`` and ``total`` do not matter)."""
        self.update_masks(self.sparsity)


__all__ = ["MagnitudeSparsifier", "magnitude_masks"]
