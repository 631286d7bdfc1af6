"""Where the pruning driver lives: one-shot magnitude, gradual magnitude (gmp) and L0 gates,
the latter two fine-tuned in TVM (:mod:`sparse_tvm.training`).

Every method is a :class:`Sparsifier` with the lifecycle of ``torch.ao.pruning``:
``prepare`` -> ``step`` -> ``squash_mask`` -> ``convert``; :func:`prune` drives them.
"""

from sparse_tvm.frontend.initializers import PrunableWeight, prunable_weights
from sparse_tvm.pruning.api import PruneReport, PruneResult, make_sparsifier, prune
from sparse_tvm.pruning.gates import Gate
from sparse_tvm.pruning.gmp import GMPSparsifier, cubic_sparsity
from sparse_tvm.pruning.l0 import L0Sparsifier
from sparse_tvm.pruning.magnitude import (
    BLOCK_PATTERNS,
    block_mask,
    parse_pattern,
    prune_magnitude,
)
from sparse_tvm.pruning.one_shot import MagnitudeSparsifier, magnitude_masks
from sparse_tvm.pruning.patterns import Pattern, follows_pattern, global_masks, n_of_m_mask, parse
from sparse_tvm.pruning.sparsifier import Sparsifier

__all__ = [
    "BLOCK_PATTERNS",
    "GMPSparsifier",
    "Gate",
    "L0Sparsifier",
    "MagnitudeSparsifier",
    "Pattern",
    "PrunableWeight",
    "PruneReport",
    "PruneResult",
    "Sparsifier",
    "block_mask",
    "cubic_sparsity",
    "follows_pattern",
    "global_masks",
    "magnitude_masks",
    "make_sparsifier",
    "n_of_m_mask",
    "parse",
    "parse_pattern",
    "prunable_weights",
    "prune",
    "prune_magnitude",
]
