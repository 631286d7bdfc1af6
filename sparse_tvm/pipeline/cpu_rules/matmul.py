"""Register-tiled matmul for x86/Arm CPUs: dense layers and batched attention matmuls.

Handles one ``C[S, I, J] += A[S, I, K] * B[S?, K, J]`` block, with spatial producers
(transposes, reshapes) inlined into its reads and an injective epilogue (bias, residual,
ReLU, GELU...) computed tile by tile while the accumulators are still in registers.

Schedule, for an ``mr x nr`` register tile (``nr`` a multiple of the vector width)::

    parallel for (s, j0, i0):            # outer tiles, fused and shared by the cores
        acc[mr, nr] = 0                  # "local" scope: promoted to registers by LLVM
        for k:                           # K innermost over the tile
            for i1 in unroll(mr):
                for j1 in vectorize(nr):
                    acc[i1, j1] += A[i, k] * B[k, j]
        out[tile] = epilogue(acc)        # vectorized along J

When ``B`` is a constant weight (a ``layout_free_buffers`` entry: a dense layer's ``[K, N]``, a
channels-last 1x1 conv's ``[1, 1, K, N]``), it is read through a packed ``(N / nr, ..., K, nr)``
copy: the copy is a ``meta_schedule.layout_rewrite_preproc`` block that
``SplitLayoutRewritePreproc`` + ``FoldConstant`` turn into a pre-packed constant
(:func:`._common.pack_weight`). Packing the 1x1 convs too took dense MobileNet-v2 from 6.30 to
5.84 ms and ResNet-50 from 55.7 to 49.2 ms on 2 EPYC cores.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir.dlight.base import ScheduleRule
from tvm.s_tir.dlight.gpu.matmul import IterKind, detect_iter_traits
from tvm.target import Target
from tvm.tirx.analysis import undefined_vars

from sparse_tvm.target.machine import vector_lanes

from ._common import (
    const_extent,
    inline_injective,
    output_dtype_bits,
    pack_weight,
    pick_tile,
)


class Matmul(ScheduleRule):
    """Register-tiled, vectorized, parallel GEMM with fused epilogue; constant right-hand
    sides are read through the ``(N / nr, K, nr)`` panel layout (pre-packed at compile time)."""

    def apply(self, func: tirx.PrimFunc, target: Target, _tunable: bool):
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = inline_injective(sch)
        if infos is None:
            return None
        reductions = [i for i in infos if not i.is_injective()]
        if len(reductions) != 1 or any(k not in "SR" for k in reductions[0].dom_kind()):
            return None
        main_info = reductions[0]
        main = main_info.block_rv
        tail = infos[infos.index(main_info) + 1 :]
        if infos.index(main_info) != 0 or len(tail) > 1:
            return None
        traits = detect_iter_traits(sch.get(main))
        if traits is None:
            return None
        block_traits = traits[3]

        stmt = sch.get(main)
        iter_vars = [iv.var for iv in stmt.iter_vars]
        kinds = [t.kind for t in block_traits]
        j_vars = {v for v, k in zip(iter_vars, kinds, strict=True) if k == IterKind.kIter_J}
        # vectorizing along J needs J to be the contiguous axis of the output
        c_last = undefined_vars(stmt.writes[0].region[-1].min)
        if len(c_last) != 1 or c_last[0] not in j_vars:
            return None
        if not isinstance(stmt.body, tirx.BufferStore):
            return None

        lanes = vector_lanes(target, output_dtype_bits(sch, main))
        loops = sch.get_loops(main)
        groups: dict[IterKind, list] = {k: [] for k in IterKind}
        for loop, kind in zip(loops, kinds, strict=True):
            groups[kind].append(loop)
        if len(groups[IterKind.kIter_J]) != 1 or len(groups[IterKind.kIter_K]) != 1:
            return None
        j_ext = const_extent(sch, groups[IterKind.kIter_J][0]) or 0
        # the I loops are fused and split by mr; the epilogue, computed at the tile, keeps its
        # own loops, so mr divides the innermost I loop (a tile across two of its rows would
        # make the epilogue read accumulators that another tile holds)
        i_loops = groups[IterKind.kIter_I]
        rows = (const_extent(sch, i_loops[-1]) or 0) if i_loops else 1
        tile = pick_tile(j_ext, rows, lanes)
        if tile is None:
            return None
        mr, nr = tile

        # Output tile goes through a small "local" accumulator.
        if tail:
            epilogue = tail[0].block_rv
            sch.set_scope(main, 0, "local")
        else:
            epilogue = sch.cache_write(main, 0, "local")

        self._pack_rhs(sch, main, func, nr)

        loops = sch.get_loops(main)
        groups = {k: [] for k in IterKind}
        for loop, kind in zip(loops, kinds, strict=True):
            groups[kind].append(loop)
        outer = groups[IterKind.kIter_T] + groups[IterKind.kIter_S]
        s_loop = sch.fuse(*outer) if len(outer) > 1 else (outer[0] if outer else None)
        i_loop = groups[IterKind.kIter_I]
        i_loop = sch.fuse(*i_loop) if len(i_loop) > 1 else i_loop[0]
        (j_loop,) = groups[IterKind.kIter_J]
        (k_loop,) = groups[IterKind.kIter_K]
        i0, i1 = sch.split(i_loop, factors=[None, mr])
        j0, j1 = sch.split(j_loop, factors=[None, nr])
        order = ([s_loop] if s_loop is not None else []) + [j0, i0, k_loop, i1, j1]
        sch.reorder(*order)
        par = sch.fuse(*order[: order.index(i0) + 1])
        sch.parallel(par)
        sch.reverse_compute_at(epilogue, par, preserve_unit_loops=True)
        # vectorize before decomposing: the update block alone fails the dataflow check
        sch.unroll(i1)
        sch.vectorize(j1)
        init = sch.decompose_reduction(main, k_loop)
        init_loops = sch.get_loops(init)
        sch.vectorize(init_loops[-1])
        sch.unroll(init_loops[-2])
        epi_loops = sch.get_loops(epilogue)
        sch.vectorize(epi_loops[-1])
        return sch

    @staticmethod
    def _pack_rhs(sch: s_tir.Schedule, main, func: tirx.PrimFunc, nr: int) -> None:
        """Read a constant ``B[..., K, N]`` (a dense weight, a 1x1 conv's HWIO kernel) through a
        packed ``(N / nr, ..., K, nr)`` copy."""
        rhs = sch.get(main).reads[1].source
        if len(rhs.shape) < 2 or not isinstance(rhs.shape[-1], tirx.IntImm):
            return
        pack_weight(sch, main, func, int(rhs.shape[-1]), nr, read=1)
