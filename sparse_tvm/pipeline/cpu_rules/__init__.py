"""Default schedule rules for CPU PrimFuncs, one rule per module, tried in order.

===================  =========================================================
rule                 handles
===================  =========================================================
``Matmul``           dense / batched matmul (+ epilogue), weight pre-packing
``RowReduction``     softmax, layer norm, a lone max / min / sum over the last axis: vector
                     partial results per row
``SpatialReduction`` conv2d, depthwise conv, pooling: tiled along the output rows
``dl.cpu.Reduction`` other reductions (mean, short rows): rows in parallel (TVM dlight)
``Elementwise``      injective chains: fused, parallel, vectorized
``Fallback``         anything else: outer loops in parallel
===================  =========================================================
"""

from __future__ import annotations

from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target

from sparse_tvm.pipeline.cpu_rules.elementwise import Elementwise
from sparse_tvm.pipeline.cpu_rules.fallback import Fallback
from sparse_tvm.pipeline.cpu_rules.matmul import Matmul
from sparse_tvm.pipeline.cpu_rules.row_reduction import RowReduction
from sparse_tvm.pipeline.cpu_rules.spatial_reduction import SpatialReduction


def default_rules(target: Target) -> list[ScheduleRule]:
    """The rules :func:`sparse_tvm.pipeline.cpu.cpu_pipeline` tries, most specific first."""
    del target  # the rules read vector width and core count from the target themselves
    return [
        Matmul(),
        RowReduction(),  # before SpatialReduction: a lone row max would be "spatial" there
        SpatialReduction(),
        dl.cpu.Reduction(),
        Elementwise(),
        Fallback(),
    ]


__all__ = [
    "Elementwise",
    "Fallback",
    "Matmul",
    "RowReduction",
    "SpatialReduction",
    "default_rules",
]
