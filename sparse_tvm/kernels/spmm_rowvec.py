"""Row-vector SpMM: vectorised across the ``r`` output features of an ``r x c`` block.

X is seen as a row-major ``(rows, k)`` matrix (layout ``"MK"``, or ``"KM"`` with ``m == 1``
where the rows are the batch) and Y as ``(rows, n)``. The micro-kernel is a dense GEMM
micro-kernel whose K loop runs over the nonzero blocks of one block row:

* accumulators ``acc[MT, r]``: ``MT`` rows of X x the ``r`` outputs of a block row, which LLVM
  keeps in ``MT * r / VL`` vector registers;
* per nonzero block and input column ``j``: one vector load of ``data[b, j, 0:r]`` (contiguous
  by the format's layout) and ``MT`` broadcast-FMAs with ``X[row, col * c + j]``;
* bias and ReLU applied on the way out, stores contiguous along ``n``.

Threads split the block rows into groups (each group's weights stay in the core's L2); inside
a group the loop is m tiles, then block rows. The last m tile is shifted back to end at
``rows`` (it overlaps its neighbour and recomputes identical values) so that there is no
ragged tile; ``rows < MT`` uses ``MT = rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from .spmm import SpmmSpec


@dataclass(frozen=True)
class RowvecKnobs:
    """Schedule knobs of the row-vector kernel (the tuner searches them).

    ``MT`` X rows per register tile; the block rows split into ``NG`` groups; ``partition``
    0 = threads take groups, 1 = threads take m tiles, 2 = threads take (group, m tile)
    pairs; ``order`` 0 = m tiles outer / block rows inner inside a thread, 1 = the reverse;
    ``unroll`` = unroll factor of the loop over the nonzero blocks of a block row.
    """

    MT: int
    NG: int
    partition: int = 0
    order: int = 0
    unroll: int = 1


def rowvec_tiles(spec: SpmmSpec) -> tuple[int, int]:
    """Knobs ``(MT, groups)``: X rows per register tile, block-row groups split over threads."""
    regs_per_row = max(1, -(-spec.r // spec.lanes))
    mt = max(1, min(spec.rows, 8 // regs_per_row if regs_per_row <= 8 else 1))
    # A few groups per core for balance; each group's weights are read once per m tile.
    groups = max(1, min(spec.block_rows, 4 * spec.cores))
    return mt, groups


def default_rowvec_knobs(spec: SpmmSpec) -> RowvecKnobs:
    """The hand-picked knobs: the default schedule without tuning records."""
    mt, groups = rowvec_tiles(spec)
    return RowvecKnobs(MT=mt, NG=groups)


def rowvec_body(spec: SpmmSpec, knobs: RowvecKnobs | None = None):
    """The TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)`` for ``knobs``
    (default: the hand-picked :func:`default_rowvec_knobs`)."""
    knobs = knobs if knobs is not None else default_rowvec_knobs(spec)
    MT, NG, part, order, U = knobs.MT, knobs.NG, knobs.partition, knobs.order, knobs.unroll
    n, k, r, c = spec.n, spec.k, spec.r, spec.c
    nbr, rows = spec.block_rows, spec.rows
    MT = max(1, min(MT, rows))
    G = -(-nbr // max(1, min(NG, nbr)))
    NG = -(-nbr // G)
    ntile = -(-rows // MT)
    k_ragged = k % c != 0
    n_tail = spec.n_tail
    epi = spec.epilogue

    @T.macro
    def fma(Xf, data, indices, acc, b, m0):
        for j in T.unroll(c):
            kc = T.meta_var(indices[b] * c + j)
            for mt in T.unroll(MT):
                for ri in T.vectorized(r):
                    if k_ragged:
                        acc[mt, ri] = acc[mt, ri] + data[b, j, ri] * T.if_then_else(
                            kc < k, Xf[(m0 + mt) * k + T.min(kc, k - 1)], T.float32(0)
                        )
                    else:
                        acc[mt, ri] = acc[mt, ri] + data[b, j, ri] * Xf[(m0 + mt) * k + kc]

    @T.macro
    def tile(Xf, data, indices, indptr, B, Yf, br, t):
        if br < nbr:
            acc = T.alloc_buffer((MT, r), "float32", scope="global")
            m0 = T.meta_var(T.min(t * MT, rows - MT))
            for mt in T.unroll(MT):
                for ri in T.vectorized(r):
                    acc[mt, ri] = T.float32(0)
            start = T.meta_var(indptr[br])
            count = T.meta_var(indptr[br + 1] - indptr[br])
            if U == 1:
                for b in range(indptr[br], indptr[br + 1]):
                    fma(Xf, data, indices, acc, b, m0)
            else:
                for bo in range(count // U):
                    for bu in T.unroll(U):
                        fma(Xf, data, indices, acc, start + bo * U + bu, m0)
                for bt in range(count % U):
                    fma(Xf, data, indices, acc, start + count // U * U + bt, m0)
            if n_tail == r or br < nbr - 1:
                for mt in T.unroll(MT):
                    for ri in T.vectorized(r):
                        Yf[(m0 + mt) * n + br * r + ri] = epi(acc[mt, ri], B, br * r + ri)
            else:
                for mt in T.unroll(MT):
                    for ri in range(n_tail):
                        Yf[(m0 + mt) * n + br * r + ri] = epi(acc[mt, ri], B, br * r + ri)

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        if part == 0:
            for g in T.parallel(NG):
                if order == 0:
                    for t in range(ntile):
                        for bri in range(G):
                            tile(Xf, data, indices, indptr, B, Yf, g * G + bri, t)
                else:
                    for bri in range(G):
                        for t in range(ntile):
                            tile(Xf, data, indices, indptr, B, Yf, g * G + bri, t)
        elif part == 1:
            for t in T.parallel(ntile):
                for br in range(nbr):
                    tile(Xf, data, indices, indptr, B, Yf, br, t)
        else:
            for it in T.parallel(NG * ntile):
                for bri in range(G):
                    if order == 0:
                        tile(Xf, data, indices, indptr, B, Yf, it // ntile * G + bri, it % ntile)
                    else:
                        tile(Xf, data, indices, indptr, B, Yf, it % NG * G + bri, it // NG)

    return body
