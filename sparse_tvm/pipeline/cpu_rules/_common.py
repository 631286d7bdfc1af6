"""Helpers shared by the CPU schedule rules: block inlining, loop extents, injective stages.

Vector lanes come from :mod:`sparse_tvm.target.machine`, as the sparse kernels' do.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.target import Target

from sparse_tvm.target.machine import vector_lanes


def const_extent(sch: s_tir.Schedule, loop: LoopRV) -> int | None:
    """The extent of ``loop`` when it is a constant, else None."""
    extent = sch.get(loop).extent
    return int(extent.value) if isinstance(extent, tirx.IntImm) else None


def output_dtype_bits(sch: s_tir.Schedule, block: SBlockRV) -> int:
    """Bit width of what ``block`` writes (32 when it writes nothing visible)."""
    writes = sch.get(block).writes
    return writes[0].source.dtype.bits if writes else 32


def inline_injective(sch: s_tir.Schedule, keep_pads: bool = False) -> list[SBlockInfo] | None:
    """Inline every injective block that can be inlined; return the blocks left, in order.

    With ``keep_pads``, padding blocks (``if_then_else`` copies) stay separate stages: inlined,
    they would put a bounds test on every load of the consumer's inner loop.
    """
    infos = normalize_prim_func(sch)
    if infos is None:
        return None
    changed = True
    while changed:
        changed = False
        for info in infos:
            if not info.is_injective() or (keep_pads and info.is_data_pad(sch)):
                continue
            try:
                sch.compute_inline(info.block_rv)
            except Exception:  # noqa: BLE001 - TVM raises ScheduleError subclasses
                continue
            changed = True
            break
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
    return infos


def schedule_injective_stage(sch: s_tir.Schedule, block: SBlockRV, target: Target) -> None:
    """Fuse all loops of an injective ``block``, vectorize by the vector width, parallelize."""
    loops = sch.get_loops(block)
    if not loops:
        return
    lanes = vector_lanes(target, output_dtype_bits(sch, block))
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    extent = const_extent(sch, fused)
    if extent is not None and extent % lanes == 0 and extent > lanes:
        outer, inner = sch.split(fused, factors=[None, lanes])
        sch.parallel(outer)
        sch.vectorize(inner)
    elif extent is not None and extent <= lanes:
        sch.vectorize(fused)
    else:
        sch.parallel(fused)
