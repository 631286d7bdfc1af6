"""Row reductions (layer norm, softmax) with vector partial sums.

TVM's ``dlight.cpu.Reduction`` runs each row's sums and maxima as one scalar chain: for a
MiniLM layer norm (128 rows of 384) two chains of 384 dependent adds per row, 57 us a call, and
the softmax over 12 x 128 rows of 128 took 135 us. Here each reduction over the innermost axis
is split into ``lanes`` interleaved partial results (``rfactor``): the partial block reads the
row a vector at a time into a vector accumulator, a short block folds the lanes. Every stage
is its own loop nest, parallel over the rows (the rows' partial results are small); injective
stages in between are inlined where they can be (a softmax's ``exp`` is then computed in both
of its consumers: cheaper than writing it out), the output stage is vectorized.

The rule applies where every reduction reduces only the innermost axis, over a constant extent
of at least two vectors that the vector width divides, and the function ends in an injective
stage or is that one reduction (a row max, e.g. of ``transform/split_reductions``); else
``None`` and the next rule (``dlight.cpu.Reduction``) takes it.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import get_root_block
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.schedule import SBlockRV
from tvm.target import Target

from sparse_tvm.target.machine import vector_lanes

from ._common import const_extent, inline_injective, output_dtype_bits


def _is_reduction(sch: s_tir.Schedule, block: SBlockRV) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in sch.get(block).iter_vars)


def _parallel_rows(sch: s_tir.Schedule, loops: list, keep: int) -> None:
    """Parallelize the loops above the last ``keep`` (fused into one)."""
    outer = loops[: len(loops) - keep]
    if not outer:
        return
    sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])


class RowReduction(ScheduleRule):
    """Reductions over the innermost axis with vector partial results; ``None`` elsewhere."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = inline_injective(sch)
        if not infos:
            return None
        if not infos[-1].is_injective() and len(infos) > 1:  # a reduction alone is one too
            return None
        reductions = [info for info in infos if not info.is_injective()]
        if not reductions:
            return None
        lanes = vector_lanes(target, output_dtype_bits(sch, infos[-1].block_rv))
        for info in reductions:
            kinds = info.dom_kind()
            if kinds.count("R") != 1 or not kinds.endswith("R") or not kinds.startswith("S"):
                return None
            extent = const_extent(sch, sch.get_loops(info.block_rv)[-1])
            if extent is None or extent < 2 * lanes or extent % lanes:
                return None
        partial = set()
        for info in reductions:
            rows = len(sch.get(info.block_rv).writes[0].source.shape)
            _, lane = sch.split(sch.get_loops(info.block_rv)[-1], [None, lanes])
            try:
                partial.add(sch.get(sch.rfactor(lane, factor_axis=rows)).name_hint)
            except s_tir.ScheduleError:  # a reducer rfactor does not know: not ours
                return None
        for block in sch.get_child_blocks(get_root_block(sch)):
            loops = sch.get_loops(block)
            if sch.get(block).name_hint in partial:  # rows..., vector steps, lanes
                _parallel_rows(sch, loops, keep=2)
                sch.vectorize(sch.get_loops(block)[-1])  # before the init is split off
                sch.decompose_reduction(block, sch.get_loops(block)[-2])
            elif _is_reduction(sch, block):  # rows..., the lanes folded
                _parallel_rows(sch, loops, keep=1)
            else:
                _parallel_rows(sch, loops, keep=1)
                inner = sch.get_loops(block)[-1]
                extent = const_extent(sch, inner)
                if extent is not None and extent >= lanes and extent % lanes == 0:
                    sch.vectorize(sch.split(inner, [None, lanes])[1])
        return sch
