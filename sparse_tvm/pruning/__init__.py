"""Where the pruning driver lives (one-shot magnitude now; gradual and L0 arrive with issue 4)."""

from sparse_tvm.pruning.api import PruneResult, prune
from sparse_tvm.pruning.magnitude import block_mask, parse_pattern, prune_magnitude
from sparse_tvm.pruning.weights import PrunableWeight, prunable_weights

__all__ = [
    "PruneResult",
    "prune",
    "PrunableWeight",
    "block_mask",
    "parse_pattern",
    "prunable_weights",
    "prune_magnitude",
]
