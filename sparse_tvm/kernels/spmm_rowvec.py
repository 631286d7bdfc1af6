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

from tvm.script import tirx as T

from .spmm import SpmmSpec


def rowvec_tiles(spec: SpmmSpec) -> tuple[int, int]:
    """Knobs ``(MT, groups)``: X rows per register tile, block-row groups split over threads."""
    regs_per_row = max(1, -(-spec.r // spec.lanes))
    mt = max(1, min(spec.rows, 8 // regs_per_row if regs_per_row <= 8 else 1))
    # A few groups per core for balance; each group's weights are read once per m tile.
    groups = max(1, min(spec.block_rows, 4 * spec.cores))
    return mt, groups


def rowvec_body(spec: SpmmSpec):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)``."""
    MT, NG = rowvec_tiles(spec)
    n, k, r, c = spec.n, spec.k, spec.r, spec.c
    nbr, rows = spec.block_rows, spec.rows
    G = -(-nbr // NG)
    NG = -(-nbr // G)
    ntile = -(-rows // MT)
    k_ragged = k % c != 0
    n_tail = spec.n_tail
    epi = spec.epilogue

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        for g in T.parallel(NG):
            for t in range(ntile):
                for bri in range(G):
                    br = T.meta_var(g * G + bri)
                    if br < nbr:
                        acc = T.alloc_buffer((MT, r), "float32", scope="global")
                        m0 = T.meta_var(T.min(t * MT, rows - MT))
                        for mt in T.unroll(MT):
                            for ri in T.vectorized(r):
                                acc[mt, ri] = T.float32(0)
                        for b in range(indptr[br], indptr[br + 1]):
                            for j in T.unroll(c):
                                kc = T.meta_var(indices[b] * c + j)
                                for mt in T.unroll(MT):
                                    for ri in T.vectorized(r):
                                        if k_ragged:
                                            acc[mt, ri] = acc[mt, ri] + data[
                                                b, j, ri
                                            ] * T.if_then_else(
                                                kc < k,
                                                Xf[(m0 + mt) * k + T.min(kc, k - 1)],
                                                T.float32(0),
                                            )
                                        else:
                                            acc[mt, ri] = (
                                                acc[mt, ri]
                                                + data[b, j, ri] * Xf[(m0 + mt) * k + kc]
                                            )
                        if n_tail == r or br < nbr - 1:
                            for mt in T.unroll(MT):
                                for ri in T.vectorized(r):
                                    Yf[(m0 + mt) * n + br * r + ri] = epi(
                                        acc[mt, ri], B, br * r + ri
                                    )
                        else:
                            for mt in T.unroll(MT):
                                for ri in range(n_tail):
                                    Yf[(m0 + mt) * n + br * r + ri] = epi(
                                        acc[mt, ri], B, br * r + ri
                                    )

    return body
