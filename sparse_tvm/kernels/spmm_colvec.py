"""Column-vector SpMM: vectorised along the ``m`` columns of the activations.

X is seen as ``(batch, k, m)`` with the ``m`` values of one input feature contiguous (layout
``"KM"``: a 1x1 conv in NCHW or an im2col output). Layout ``"DIRECT"`` reads each block's
row of X at the element offset its index holds (a conv's shifted input rows, no im2col:
:mod:`.direct_conv`). For layout ``"KM_MK"`` only the output is
transposed (into the ``(m, n)`` Y). For layout ``"MK"`` the kernel first
transposes X into a ``(k, m)`` workspace (GEMM-style packing: ``m * k`` copies against
``nnz * m`` FMAs), computes ``Y.T`` into a second workspace and transposes it back; both
transposes are vectorised in registers (:mod:`.transpose`).

* accumulators ``acc[RP, MV]``: ``RP`` output rows of a block row (the ``r`` rows in
  ``r / RP`` passes) x ``MV`` columns, ``RP * MV / VL`` vector registers (AVX-512: ``MV = 128``
  for CSR, ``48`` for ``r = 4``, ``16`` for ``r = 8, 16``);
* per nonzero block, input column ``j`` and row ``i``: ``MV / VL`` vector loads of an X row
  (reused by the ``RP`` rows), one broadcast weight, ``MV / VL`` FMAs;
* bias and ReLU on the way out, stores contiguous along ``m``.

The parallel loop is the fused ``(batch, m tile, block row)`` space, so each thread takes a
contiguous range of m tiles and block rows. The last m tile is shifted back to end at ``m``
(overlapping its neighbour, recomputing identical values) so there is no ragged tile.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from .spmm import SpmmSpec
from .transpose import transpose_macro


@dataclass(frozen=True)
class ColvecKnobs:
    """Schedule knobs of the column-vector kernel (the tuner searches them).

    ``RP`` block rows per pass, ``MV`` columns per register tile (a multiple of the vector
    width), ``order`` 0 = block rows innermost in the parallel space, 1 = m tiles innermost;
    ``unroll`` = unroll factor of the loop over the nonzero blocks of a block row.
    """

    RP: int
    MV: int
    order: int = 0
    unroll: int = 1


def colvec_tiles(spec: SpmmSpec) -> tuple[int, int]:
    """Knobs ``(RP, MV)``: block rows per pass and columns of m per register tile.

    The tile ``RP x MV`` stays under 256 floats: LowerTVMBuiltin keeps only allocations under
    1 KiB on the stack, larger ones become heap workspaces that LLVM cannot put in registers.
    """
    vl = spec.lanes
    rp = max(d for d in range(1, min(spec.r, 8) + 1) if spec.r % d == 0)
    # Whole registers, a power of two of them: LLVM splits a 3-register <48 x float> badly
    # (measured 15x slower than two registers on 4x1 and CSR conv layers).
    vectors = max(1, min(8, 255 // (rp * vl), spec.m // vl))
    vectors = 1 << (vectors.bit_length() - 1)
    if spec.m < vl:
        return rp, spec.m
    return rp, vl * vectors


def default_colvec_knobs(spec: SpmmSpec) -> ColvecKnobs:
    """The hand-picked knobs: the default schedule without tuning records."""
    rp, mv = colvec_tiles(spec)
    return ColvecKnobs(RP=rp, MV=mv)


def colvec_body(spec: SpmmSpec, knobs: ColvecKnobs | None = None):
    """The TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)`` for ``knobs``
    (default: the hand-picked :func:`default_colvec_knobs`)."""
    knobs = knobs if knobs is not None else default_colvec_knobs(spec)
    RP, MV, order, U = knobs.RP, knobs.MV, knobs.order, knobs.unroll
    n, k, r, c, m = spec.n, spec.k, spec.r, spec.c, spec.m
    nbr, batch = spec.block_rows, spec.batch
    if r % RP:
        raise ValueError(f"RP={RP} must divide r={r}")
    MV = max(1, min(MV, m))
    passes = r // RP
    ntile = -(-m // MV)
    k_ragged = k % c != 0
    n_ragged = spec.n_tail != r
    packed_in = spec.x_layout == "MK"
    packed_out = spec.x_layout not in ("KM", "DIRECT")
    direct = spec.x_layout == "DIRECT"
    epi = spec.epilogue

    @T.macro
    def fma(XT, xbase, data, indices, acc, b, m0, p):
        if direct:  # r x 1 blocks; the index is the offset of the block's X row
            for rr in T.unroll(RP):
                for v in T.vectorized(MV):
                    acc[rr, v] = acc[rr, v] + data[b, 0, p * RP + rr] * XT[indices[b] + m0 + v]
        else:
            for j in T.unroll(c):
                kc = T.meta_var(indices[b] * c + j)
                for rr in T.unroll(RP):
                    for v in T.vectorized(MV):
                        if k_ragged:
                            acc[rr, v] = acc[rr, v] + data[b, j, p * RP + rr] * T.if_then_else(
                                kc < k, XT[xbase + T.min(kc, k - 1) * m + m0 + v], T.float32(0)
                            )
                        else:
                            acc[rr, v] = (
                                acc[rr, v] + data[b, j, p * RP + rr] * XT[xbase + kc * m + m0 + v]
                            )

    @T.macro
    def tile(XT, xbase, YT, ybase, data, indices, indptr, B, br, m0, p):
        acc = T.alloc_buffer((RP, MV), "float32", scope="global")
        for rr in T.unroll(RP):
            for v in T.vectorized(MV):
                acc[rr, v] = T.float32(0)
        start = T.meta_var(indptr[br])
        count = T.meta_var(indptr[br + 1] - indptr[br])
        if U == 1:
            for b in range(indptr[br], indptr[br + 1]):
                fma(XT, xbase, data, indices, acc, b, m0, p)
        else:
            for bo in range(count // U):
                for bu in T.unroll(U):
                    fma(XT, xbase, data, indices, acc, start + bo * U + bu, m0, p)
            for bt in range(count % U):
                fma(XT, xbase, data, indices, acc, start + count // U * U + bt, m0, p)
        for rr in T.unroll(RP):
            row = T.meta_var(br * r + p * RP + rr)
            if n_ragged:
                if row < n:
                    for v in T.vectorized(MV):
                        YT[ybase + row * m + m0 + v] = epi(acc[rr, v], B, row)
            else:
                for v in T.vectorized(MV):
                    YT[ybase + row * m + m0 + v] = epi(acc[rr, v], B, row)

    transpose = transpose_macro(spec.lanes)

    @T.macro
    def parallel_tiles(XT, YT, data, indices, indptr, B):
        for it in T.parallel(batch * ntile * nbr):
            bt = T.meta_var(it // (ntile * nbr))
            rest = T.meta_var(it % (ntile * nbr))
            for p in range(passes):
                if order == 0:
                    tile(
                        XT, bt * k * m, YT, bt * n * m, data, indices, indptr, B,
                        rest % nbr, T.min(rest // nbr * MV, m - MV), p,
                    )  # fmt: skip
                else:
                    tile(
                        XT, bt * k * m, YT, bt * n * m, data, indices, indptr, B,
                        rest // ntile, T.min(rest % ntile * MV, m - MV), p,
                    )  # fmt: skip

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        if packed_in:
            XT = T.alloc_buffer((k * m,), "float32")
            YT = T.alloc_buffer((n * m,), "float32")
            transpose(Xf, XT, m, k)
            parallel_tiles(XT, YT, data, indices, indptr, B)
            transpose(YT, Yf, n, m)
        elif packed_out:
            YT = T.alloc_buffer((n * m,), "float32")
            parallel_tiles(Xf, YT, data, indices, indptr, B)
            transpose(YT, Yf, n, m)
        else:
            parallel_tiles(Xf, Yf, data, indices, indptr, B)

    return body
