"""Helpers shared by the CPU schedule rules: block inlining, loop extents, injective stages,
register tiles and weight pre-packing.

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
    """Fuse all loops of an injective ``block``, vectorize by the vector width, parallelize.

    Where the innermost axis is longer than a vector but no multiple of the vector width
    (an NCHW activation's 56 or 28 columns), a vector of the fused loop would straddle two rows,
    and its loads through a reshape (``a[c, h * 56 + w]``) become per-lane gathers: that axis
    alone is vectorized instead (256 x 56 x 56 reshape + add + ReLU: 521 -> 171 us).
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    lanes = vector_lanes(target, output_dtype_bits(sch, block))
    inner = const_extent(sch, loops[-1])
    if len(loops) > 1 and inner is not None and inner % lanes and inner > lanes:
        outer = sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0]
        sch.parallel(outer)
        if inner <= 4 * lanes:
            sch.vectorize(loops[-1])
        else:
            width = next(d for d in range(lanes, 0, -1) if inner % d == 0)
            sch.vectorize(sch.split(loops[-1], factors=[None, width])[1])
        return
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


ACC_REGS = 24  # of 32 vector registers: the rest hold B and the broadcast A


def _largest_divisor(extent: int, limit: int) -> int:
    return next(d for d in range(max(1, min(extent, limit)), 0, -1) if extent % d == 0)


def pick_tile(j_ext: int, rows: int, lanes: int) -> tuple[int, int] | None:
    """The ``(mr, nr)`` register tile: ``nr`` dividing ``J``, whole vectors (1, 2 or 4; 3 only
    where nothing else fits: LLVM splits 3-register vectors badly) or else a half or quarter
    vector; ``mr`` dividing ``rows`` (the innermost I loop: a tile never straddles two of its
    rows); the most accumulator lanes within ``ACC_REGS`` registers, then the widest ``nr``.

    A 7x7 conv output (``rows`` = 7) gets 7 x 2 vectors rather than 1 x 4; a BERT matmul
    (``rows`` = 128) 4 x 4 vectors; 24 output channels 14 x half vectors, not one 24-lane
    vector (15x slower)."""
    widths = [w * lanes for w in (4, 2, 1) if j_ext % (w * lanes) == 0]
    if not widths and j_ext % (3 * lanes) == 0:
        widths = [3 * lanes]
    if not widths:
        widths = [w for w in (lanes // 2, lanes // 4) if w >= 4 and j_ext % w == 0]
    if not widths:
        if 0 < j_ext <= 4 * lanes:  # a narrow J: the whole of it
            regs = -(-j_ext // lanes)
            return (_largest_divisor(rows, ACC_REGS // regs) if rows > 0 else 1), j_ext
        return None
    best = None
    for nr in widths:
        regs = -(-nr // lanes)
        mr = _largest_divisor(rows, ACC_REGS // regs) if rows > 0 else 1
        score = (mr * nr, nr)
        if best is None or score > best[0]:
            best = (score, (mr, nr))
    return best[1]


PREPROC_ATTR = "meta_schedule.layout_rewrite_preproc"  # a weight pre-packing copy


def pack_weight(
    sch: s_tir.Schedule,
    main: SBlockRV,
    func: tirx.PrimFunc,
    v_ext: int,
    nr: int,
    read: int | None = None,
) -> None:
    """Read a constant ``[..., v]`` weight of ``main`` (a conv's HWIO ``[kh, kw, c_in, c_out]``, a
    dense ``[K, N]``) through a ``(v / nr, ..., nr)`` copy that ``SplitLayoutRewritePreproc`` +
    ``FoldConstant`` pre-pack at compile time (``PREPROC_ATTR``): one channel tile's weights are
    then one contiguous run. The weight is the first of ``main``'s reads (or read number
    ``read``) that is a ``layout_free_buffers`` parameter with ``v_ext`` as its last axis; a
    weight no wider than one tile is read as it is."""
    free = func.attrs.get("layout_free_buffers") if func.attrs else None
    if not free or v_ext % nr or v_ext == nr:
        return
    params = [func.params[int(i)] for i in free]
    for index, region in enumerate(sch.get(main).reads):
        if read is not None and index != read:
            continue
        weight = region.source
        if not any(p.same_as(weight) for p in params) or len(weight.shape) < 2:
            continue
        last = weight.shape[-1]
        if not isinstance(last, tirx.IntImm) or int(last) != v_ext:
            continue
        cache = sch.cache_read(main, index, "global")
        sch.annotate(cache, PREPROC_ATTR, True)
        sch.transform_layout(
            cache, ("write", 0), lambda *axes: (axes[-1] // nr, *axes[:-1], axes[-1] % nr)
        )
        return
