"""Helpers shared by the CPU schedule rules: vector width, block inlining, loop extents."""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.s_tir.schedule import LoopRV, SBlockRV
from tvm.target import Target
from tvm.target.codegen import llvm_get_vector_width


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """Number of ``dtype_bits`` lanes in one SIMD register of ``target`` (16 floats on AVX-512)."""
    bits = llvm_get_vector_width(target) if target.kind.name == "llvm" else 128
    if bits <= 0:
        bits = 128
    return max(bits // dtype_bits, 1)


def num_cores(target: Target) -> int:
    """The target's ``num-cores``, 1 when it does not say."""
    return int(target.attrs.get("num-cores", 1) or 1)


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


def vectorize_innermost(sch: s_tir.Schedule, loop: LoopRV, lanes: int) -> None:
    """Split ``loop`` by ``lanes`` (when it divides) and vectorize the inner part."""
    extent = const_extent(sch, loop)
    if extent is None or extent < 2:
        return
    if extent <= lanes:
        sch.vectorize(loop)
        return
    if extent % lanes == 0:
        _, inner = sch.split(loop, factors=[None, lanes])
        sch.vectorize(inner)
        return
    for width in range(lanes, 1, -1):
        if extent % width == 0 and width >= lanes // 4:
            _, inner = sch.split(loop, factors=[None, width])
            sch.vectorize(inner)
            return


def parallel_outer(sch: s_tir.Schedule, loops: list[LoopRV], target: Target, min_work: int = 1):
    """Fuse leading loops until there is enough parallel work for the cores, then parallelize.

    Returns the parallel loop (or None when ``loops`` is empty).
    """
    if not loops:
        return None
    cores = num_cores(target)
    take = 1
    work = const_extent(sch, loops[0]) or cores * 4
    while take < len(loops) and work < cores * 4 * min_work:
        nxt = const_extent(sch, loops[take])
        if nxt is None:
            break
        work *= nxt
        take += 1
    fused = sch.fuse(*loops[:take]) if take > 1 else loops[0]
    sch.parallel(fused)
    return fused


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
