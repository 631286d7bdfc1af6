"""Convolutions, pooling and other reductions whose output has a contiguous spatial axis.

For a reduction block ``out[..., r, v] = reduce(...)`` (NHWC conv2d: ``r = w``, ``v`` = the
output channels), the output is tiled ``mr x nr`` over its last two axes (``pick_tile``: the
most accumulator registers, ``mr`` dividing the row), the reduction loops run inside the tile
with the ``mr x nr`` accumulators in a "local" buffer (registers), ``v`` is vectorized and the
outer tiles are shared by the cores; an injective epilogue (bias, ReLU) is computed per tile.
Padding is a stage of its own (inlined as bounds tests where the reduction is short: see
``SHORT_REDUCTION``); other spatial producers are inlined into the reduction's reads.

The channel tile is the outermost of the parallel loop: each core takes a contiguous range of
it, so the weights of one channel tile (``kh * kw * c_in * nr`` floats) are read from memory
once and stay in the core's L2 while it computes every output row of that tile. With the
channel tile innermost, a 3x3 512->512 conv at 7x7 read its 9 MB of weights once per row tile
(6x onnxruntime's time). A constant weight (a conv's HWIO kernel) is read through a copy packed
at compile time into ``(c_out / nr, kh, kw, c_in, nr)`` panels (:func:`pack_weight`), so that a
channel tile's weights are one contiguous run the prefetcher streams: in HWIO they are ``nr``
floats every ``c_out`` (a 3x3 512->512 conv at 7x7, weights out of cache: 2.1 -> 1.2 ms;
ResNet-50 dense 54.2 -> 50.7 ms on 2 EPYC cores).
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.target import Target
from tvm.tirx.analysis import undefined_vars

from sparse_tvm.target.machine import vector_lanes

from ._common import (
    const_extent,
    inline_injective,
    output_dtype_bits,
    pack_weight,
    pick_tile,
    schedule_injective_stage,
)

# Up to this many reduction steps per output (a depthwise conv's kh * kw, a stem conv's
# kh * kw * 3), the padding is read through bounds tests in the reduction rather than from a
# padded copy: the copy is a whole pass over the image for a few FMAs per element (MobileNet-v2's
# depthwise 3x3 at 56x56x144 / 2: 102 -> 31 us; the 7x7 / 2 stem of ResNet-50: 1440 -> 1216 us),
# while in a long channel loop the tests cost more than the copy (3x3 256->256 at 14x14: 2.4x).
SHORT_REDUCTION = 256


class SpatialReduction(ScheduleRule):
    """Register-tiled reduction vectorized along the output's innermost axis."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = inline_injective(sch, keep_pads=True)
        if infos is None:
            return None
        pads = [i for i in infos if i.is_data_pad(sch)]
        infos = [i for i in infos if not i.is_data_pad(sch)]
        if not infos or infos[0].is_injective():
            return None
        main_info, tail = infos[0], infos[1:]
        if len(tail) > 1 or any(not t.is_injective() for t in tail):
            return None
        if any(k not in "SR" for k in main_info.dom_kind()):
            return None
        main = main_info.block_rv
        stmt = sch.get(main)
        if len(stmt.writes) != 1 or not isinstance(stmt.body, tirx.BufferStore):
            return None
        if pads and _reduction_size(stmt, main_info.dom_kind()) <= SHORT_REDUCTION:
            for pad in pads:  # read through bounds tests instead of a padded copy
                sch.compute_inline(pad.block_rv)
            pads = []
            stmt = sch.get(main)

        iter_vars = [iv.var for iv in stmt.iter_vars]
        out_axes = []
        for rng in stmt.writes[0].region:
            used = undefined_vars(rng.min)
            out_axes.append(used[0] if len(used) == 1 and rng.min.same_as(used[0]) else None)
        loops = sch.get_loops(main)
        loop_of = {}
        for loop, var in zip(loops, iter_vars, strict=True):
            loop_of[var] = loop
        # a full reduction (scalar output) has no axis to vectorize: the Reduction rule's
        if not out_axes or out_axes[-1] is None or out_axes[-1] not in loop_of:
            return None
        v_var = out_axes[-1]
        r_var = out_axes[-2] if len(out_axes) >= 2 and out_axes[-2] in loop_of else None

        lanes = vector_lanes(target, output_dtype_bits(sch, main))
        v_ext = const_extent(sch, loop_of[v_var])
        if v_ext is None or v_ext < 2:
            return None
        r_ext = const_extent(sch, loop_of[r_var]) if r_var is not None else None
        tile = pick_tile(v_ext, r_ext or 1, lanes)
        if tile is None:  # a wide axis no vector width divides: the largest divisor that fits
            tile = 1, next(d for d in range(4 * lanes, 0, -1) if v_ext % d == 0)
        mr, nr = tile
        if nr < 2:
            return None

        if tail:
            epilogue = tail[0].block_rv
            sch.set_scope(main, 0, "local")
        else:
            epilogue = sch.cache_write(main, 0, "local")
        pack_weight(sch, main, func, v_ext, nr)

        kinds = main_info.dom_kind()
        loops = sch.get_loops(main)
        spatial = [
            lp
            for lp, var, k in zip(loops, iter_vars, kinds, strict=True)
            if k == "S" and var not in (v_var, r_var)
        ]
        reduce = [lp for lp, k in zip(loops, kinds, strict=True) if k == "R"]
        v_loop = loops[iter_vars.index(v_var)]
        v0, v1 = sch.split(v_loop, factors=[None, nr])
        if r_var is not None:
            r0, r1 = sch.split(loops[iter_vars.index(r_var)], factors=[None, mr])
            outer, inner = [v0, *spatial, r0], [r1, v1]
        else:
            outer, inner = [v0, *spatial], [v1]
        sch.reorder(*outer, *reduce, *inner)
        par = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(par)
        sch.reverse_compute_at(epilogue, par, preserve_unit_loops=True)
        if len(inner) == 2:
            sch.unroll(inner[0])
        sch.vectorize(inner[-1])
        if reduce:
            init = sch.decompose_reduction(main, reduce[0])
            init_loops = sch.get_loops(init)
            sch.vectorize(init_loops[-1])
        epi_loops = sch.get_loops(epilogue)
        sch.vectorize(epi_loops[-1])
        for pad in pads:
            schedule_injective_stage(sch, pad.block_rv, target)
        return sch


def _reduction_size(stmt, kinds: str) -> int:
    """The number of reduction steps of each output of ``stmt`` (its ``R`` domains' product)."""
    size = 1
    for iv, kind in zip(stmt.iter_vars, kinds, strict=True):
        if kind == "R":
            extent = iv.dom.extent
            size *= int(extent.value) if isinstance(extent, tirx.IntImm) else SHORT_REDUCTION + 1
    return size
