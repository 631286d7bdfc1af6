"""Where the pruning driver lives: one-shot magnitude, gradual magnitude (gmp) and L0 gates,
the latter two fine-tuned in TVM (:mod:`sparse_tvm.training`)."""

from sparse_tvm.pruning.api import PruneReport, PruneResult, prune
from sparse_tvm.pruning.gmp import cubic_sparsity, magnitude_masks
from sparse_tvm.pruning.magnitude import (
    BLOCK_PATTERNS,
    block_mask,
    parse_pattern,
    prune_magnitude,
)
from sparse_tvm.pruning.patterns import Pattern, follows_pattern, global_masks, n_of_m_mask, parse
from sparse_tvm.pruning.weights import PrunableWeight, prunable_weights

__all__ = [
    "BLOCK_PATTERNS",
    "Pattern",
    "PrunableWeight",
    "PruneReport",
    "PruneResult",
    "block_mask",
    "cubic_sparsity",
    "follows_pattern",
    "global_masks",
    "magnitude_masks",
    "n_of_m_mask",
    "parse",
    "parse_pattern",
    "prunable_weights",
    "prune",
    "prune_magnitude",
]
