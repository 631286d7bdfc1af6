"""The per-layer decision (:mod:`~sparse_tvm.decision.layer_decision`) and the layer timings
it rests on (:mod:`~sparse_tvm.decision.layer_timing`)."""

from sparse_tvm.decision.layer_decision import (
    KEEP_SPARSE_MARGIN,
    RECHECK_ESTIMATE,
    BoardTimings,
    LayerDecision,
    candidate_blocks,
    decide,
    decide_layers,
    decided_speedup,
    layer_row,
    records_database,
    tuning_blocks,
)

__all__ = [
    "KEEP_SPARSE_MARGIN",
    "RECHECK_ESTIMATE",
    "BoardTimings",
    "LayerDecision",
    "candidate_blocks",
    "decide",
    "decide_layers",
    "decided_speedup",
    "layer_row",
    "records_database",
    "tuning_blocks",
]
