"""SpMM for NVIDIA GPUs: CSR / BSR weight x dense activations, in TVMScript with thread bindings.

Same math, parameters and layouts as the CPU kernels (:func:`sparse_tvm.kernels.spmm_kernel`):
``X, data, indices, indptr, [bias], Y``; layout ``"MK"`` (a MatMul: ``Y = X @ W.T``) or ``"KM"``
(a 1x1 conv / im2col output: ``Y[b] = W @ X[b]``); bias and ReLU fused on the way out.

Mapping (the knobs of :class:`CudaKnobs`; the tuner searches them, see
:mod:`sparse_tvm.tuning.space_cuda`):

* **grid**: one thread block per (batch, m tile, row group). The ``G`` row groups split the
  block rows so that each holds about ``nnz / G`` nonzero blocks: group ``g`` starts at the
  first block row ``br`` with ``indptr[br] >= g * nnz / G``, found by a binary search of
  ``indptr`` at the start of the block (the row-group table is computed from ``indptr`` on the
  device, so the kernel keeps the CPU kernels' signature and is specialised on shapes only).
* **threads**: ``TM x TR`` per block. ``TM`` threads along the m tile (each holds ``VM``
  columns, strided by ``TM`` so that neighbouring threads touch neighbouring columns) times
  ``TR`` threads along the block rows of the group (rows ``lo + tr``, ``lo + tr + TR``, ...).
  ``order`` picks which of the two is fastest-varying in ``threadIdx.x``, i.e. what one warp
  spans: 0 = columns (coalesced X and Y for ``"KM"``), 1 = rows (coalesced Y for ``"MK"``).
* **registers**: per thread an ``r x VM`` accumulator tile; per nonzero block and input column
  ``j`` one weight load per output row of the block, reused for ``VM`` columns.
* **shared memory** (``smem = 1``): the block first copies the m tile of the dense operand,
  ``k x (TM * VM)`` floats, into shared memory with coalesced loads (transposed to
  ``[k][m tile]`` so that the gathers of neighbouring threads hit neighbouring banks); the
  sparse gathers ``X[indices[b] * c + j, col]`` then read shared memory. Allowed while the tile
  fits the 48 KiB of static shared memory.
* ``unroll``: unroll factor of the loop over the nonzero blocks of a block row (main loop of
  ``count // unroll`` unrolled steps, then the rest).

:func:`cuda_spmm_body` can also emit the same loops with serial loops in place of the thread
bindings and global in place of shared/local memory (``emulate=True``): that kernel runs on the
CPU and checks the index math of the template against numpy where there is no GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.script import tirx as T

from ...formats.block_sparse import BlockSparseWeight
from ..spmm import SpmmSpec, spmm_spec, wrap_kernel
from ._loops import thread_loop

__all__ = [
    "MAX_ACCUMULATORS",
    "SHARED_FLOATS",
    "CudaKnobs",
    "cuda_spmm_body",
    "cuda_spmm_kernel",
    "default_cuda_knobs",
    "smem_fits",
]

SHARED_FLOATS = 48 * 1024 // 4  # static shared memory per block (48 KiB) in float32
MAX_ACCUMULATORS = 64  # r * VM: registers of the accumulator tile of one thread
COPY_UNROLL = 4  # X tile elements each thread copies per unrolled step
BLOCKS_WANTED = 256  # thread blocks the default knobs aim for (108 SMs on an A100, 132 on H100)


@dataclass(frozen=True)
class CudaKnobs:
    """Schedule knobs of the CUDA SpMM kernel (see the module docstring)."""

    TM: int  # threads along the m columns
    TR: int  # threads along the block rows of a group
    VM: int  # columns per thread
    G: int  # row groups, balanced by nonzero blocks
    smem: int = 0  # 1: stage the m tile of X in shared memory
    order: int = 0  # 0: threadIdx.x fastest along m, 1: fastest along the block rows
    unroll: int = 1  # unroll of the nonzero-block loop

    @property
    def threads(self) -> int:
        return self.TM * self.TR

    @property
    def m_tile(self) -> int:
        return self.TM * self.VM


def _pow2_at_least(value: int) -> int:
    return 1 << max(0, (int(value) - 1).bit_length())


def smem_fits(spec: SpmmSpec, m_tile: int) -> bool:
    """Whether the ``k x m_tile`` tile of X fits in static shared memory."""
    return spec.k * m_tile <= SHARED_FLOATS


def default_cuda_knobs(spec: SpmmSpec) -> CudaKnobs:
    """The hand-picked knobs (the default kernel without tuning records).

    ``"KM"``: a warp spans 32 columns (coalesced X reads and Y stores). ``"MK"``: a warp spans
    block rows (a thread's Y stores are ``r`` consecutive floats of a row of Y, its neighbours
    write the next ones) and X is staged in shared memory, where the gathers along k are cheap.
    Up to 128 threads per block, about ``TR`` block rows' worth of nonzeros per row group.
    Nothing here was measured on a GPU: these are the starting point the tuner improves on.
    """
    m = spec.m
    if spec.x_layout == "KM":
        tm, order = min(32, _pow2_at_least(m)), 0
    else:
        tm, order = min(8, _pow2_at_least(m)), 1
    # about 128 threads per block, one block row per row thread; but at least BLOCKS_WANTED
    # thread blocks where the rows allow it (2 per SM of an A100 / H100), with fewer row
    # threads when the groups get short
    nbr, m_tiles = spec.block_rows, -(-m // tm) * spec.batch
    groups = max(1, -(-nbr // max(1, 128 // tm)))
    if groups * m_tiles < BLOCKS_WANTED:
        groups = max(1, min(nbr, -(-BLOCKS_WANTED // m_tiles)))
    groups = -(-nbr // -(-nbr // groups))  # as the space spells it: ceil(nbr / rows per group)
    tr = max(32 // tm, min(128 // tm, _pow2_at_least(-(-nbr // groups))), 1)
    # staging pays when a row group gathers from most of the k columns it copies
    gathered = spec.n_data_blocks * spec.c / groups
    wanted = gathered * (8 if spec.x_layout == "MK" else 2) >= spec.k
    smem = int(smem_fits(spec, tm) and wanted)
    # two columns per thread halve the weight loads; not with a staged tile, which would double
    # (48 KiB for a 768-wide layer: fewer blocks per SM, 92 registers against 51 by ptxas)
    vm = 2 if not smem and m >= 4 * tm and spec.r * 2 <= MAX_ACCUMULATORS else 1
    return CudaKnobs(TM=tm, TR=tr, VM=vm, G=groups, smem=smem, order=order, unroll=1)


def _check(spec: SpmmSpec, knobs: CudaKnobs) -> None:
    if knobs.threads > 1024 or min(knobs.TM, knobs.TR, knobs.VM, knobs.G, knobs.unroll) < 1:
        raise ValueError(f"invalid CUDA SpMM knobs {knobs}")
    if spec.r * knobs.VM > MAX_ACCUMULATORS:
        raise ValueError(
            f"accumulator tile r x VM = {spec.r}x{knobs.VM} is over {MAX_ACCUMULATORS}"
        )
    if knobs.smem and not smem_fits(spec, knobs.m_tile):
        raise ValueError(f"X tile {spec.k}x{knobs.m_tile} does not fit in shared memory")


def cuda_spmm_body(spec: SpmmSpec, knobs: CudaKnobs | None = None, *, emulate: bool = False):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)`` (see module doc)."""
    knobs = knobs if knobs is not None else default_cuda_knobs(spec)
    _check(spec, knobs)
    n, k, r, c, m = spec.n, spec.k, spec.r, spec.c, spec.m
    nbr, batch, mk = spec.block_rows, spec.batch, spec.x_layout == "MK"
    TM, TR, VM, G, U = knobs.TM, knobs.TR, knobs.VM, knobs.G, knobs.unroll
    NT, MT = knobs.threads, knobs.m_tile
    smem, order = bool(knobs.smem), knobs.order
    m_tiles = -(-m // MT)
    n_blocks = batch * m_tiles * G
    steps = max(1, nbr.bit_length())  # bisection steps over [0, nbr]
    k_ragged = k % c != 0
    tile_size = k * MT if smem else 1
    # the copy of the X tile: COPY_UNROLL loads in flight per thread, the outer loop kept rolled
    # (nvcc unrolled a 192-step copy fully into 255 registers, a quarter of the occupancy)
    copy_inner = min(COPY_UNROLL, -(-tile_size // NT))
    copy_outer = -(-tile_size // (NT * copy_inner))
    epi = spec.epilogue
    local = "global" if emulate else "local"
    shared = "global" if emulate else "shared"

    def rolled(extent):
        return T.serial(extent, annotations=None if emulate else {"disable_unroll": 1})

    @T.macro
    def lower_bound(indptr, g, bound):
        # bound[0] = first block row br in [0, nbr] with indptr[br] >= g * nnz / G
        goal = T.meta_var(T.Cast("int32", T.Cast("int64", g) * T.Cast("int64", indptr[nbr]) // G))
        top = T.alloc_buffer((1,), "int32", scope=local)
        bound[0] = 0
        top[0] = nbr
        for _ in range(steps):
            if bound[0] < top[0]:
                if indptr[(bound[0] + top[0]) // 2] < goal:
                    bound[0] = (bound[0] + top[0]) // 2 + 1
                else:
                    top[0] = (bound[0] + top[0]) // 2

    @T.macro
    def step(Xf, Xs, data, indices, acc, xv, bt, b, m0, tm):
        for j in T.unroll(c):
            kc = T.meta_var(indices[b] * c + j)
            for v in T.unroll(VM):
                col = T.meta_var(m0 + tm + v * TM)
                lane = T.meta_var(tm + v * TM)
                if smem:
                    value = T.meta_var(Xs[T.min(kc, k - 1) * MT + lane])
                elif mk:
                    value = T.meta_var(Xf[T.min(col, m - 1) * k + T.min(kc, k - 1)])
                else:
                    value = T.meta_var(Xf[bt * k * m + T.min(kc, k - 1) * m + T.min(col, m - 1)])
                if k_ragged:
                    xv[v] = T.if_then_else(kc < k, value, T.float32(0))
                else:
                    xv[v] = value
            for ri in T.unroll(r):
                for v in T.unroll(VM):
                    acc[ri * VM + v] = acc[ri * VM + v] + data[b, j, ri] * xv[v]

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        for bx in thread_loop(n_blocks, "blockIdx.x", emulate):
            g = T.meta_var(bx % G)
            mt = T.meta_var(bx // G % m_tiles)
            bt = T.meta_var(bx // (G * m_tiles))
            m0 = T.meta_var(mt * MT)
            Xs = T.alloc_buffer((tile_size,), "float32", scope=shared)
            if smem:
                for tx in thread_loop(NT, "threadIdx.x", emulate):
                    for it_o in rolled(copy_outer):
                        for it_i in T.unroll(copy_inner):
                            idx = T.meta_var((it_o * copy_inner + it_i) * NT + tx)
                            if idx < tile_size:
                                if mk:
                                    # consecutive threads read consecutive k of one X row
                                    Xs[idx % k * MT + idx // k] = T.if_then_else(
                                        m0 + idx // k < m,
                                        Xf[T.min(m0 + idx // k, m - 1) * k + idx % k],
                                        T.float32(0),
                                    )
                                else:
                                    Xs[idx] = T.if_then_else(
                                        m0 + idx % MT < m,
                                        Xf[
                                            bt * k * m + idx // MT * m + T.min(m0 + idx % MT, m - 1)
                                        ],
                                        T.float32(0),
                                    )
            for tx in thread_loop(NT, "threadIdx.x", emulate):
                tm = T.meta_var(tx % TM if order == 0 else tx // TR)
                tr = T.meta_var(tx // TM if order == 0 else tx % TR)
                lo = T.alloc_buffer((1,), "int32", scope=local)
                hi = T.alloc_buffer((1,), "int32", scope=local)
                lower_bound(indptr, g, lo)
                if g + 1 < G:
                    lower_bound(indptr, g + 1, hi)
                else:
                    hi[0] = nbr
                acc = T.alloc_buffer((r * VM,), "float32", scope=local)
                xv = T.alloc_buffer((VM,), "float32", scope=local)
                for q in range((hi[0] - lo[0] + TR - 1 - tr) // TR):
                    br = T.meta_var(lo[0] + tr + q * TR)
                    start = T.meta_var(indptr[br])
                    count = T.meta_var(indptr[br + 1] - indptr[br])
                    for i in T.unroll(r * VM):
                        acc[i] = T.float32(0)
                    if U > 1:
                        for bo in range(count // U):
                            for bu in T.unroll(U):
                                step(
                                    Xf, Xs, data, indices, acc, xv, bt, start + bo * U + bu, m0, tm
                                )
                        for bu in range(count % U):
                            b = T.meta_var(start + count // U * U + bu)
                            step(Xf, Xs, data, indices, acc, xv, bt, b, m0, tm)
                    else:
                        for b in range(start, start + count):
                            step(Xf, Xs, data, indices, acc, xv, bt, b, m0, tm)
                    for ri in T.unroll(r):
                        for v in T.unroll(VM):
                            row = T.meta_var(br * r + ri)
                            col = T.meta_var(m0 + tm + v * TM)
                            if row < n and col < m:
                                if mk:
                                    Yf[col * n + row] = epi(acc[ri * VM + v], B, row)
                                else:
                                    Yf[bt * n * m + row * m + col] = epi(acc[ri * VM + v], B, row)

    return body


def cuda_spmm_kernel(
    weight: BlockSparseWeight,
    m: int,
    *,
    knobs: CudaKnobs | None = None,
    emulate: bool = False,
    **layer,
) -> tvm.tirx.PrimFunc:
    """The CUDA SpMM kernel; ``layer`` (``x_layout``, ``batch``, ``bias``, ``relu``,
    ``target``), parameters and result as :func:`sparse_tvm.kernels.spmm_kernel`.

    ``knobs`` default to :func:`default_cuda_knobs`; ``emulate`` builds the CPU twin of the
    kernel (serial loops instead of thread bindings) for checking it without a GPU.
    """
    spec = spmm_spec(weight, m, **layer)
    return wrap_kernel(spec, cuda_spmm_body(spec, knobs, emulate=emulate))
