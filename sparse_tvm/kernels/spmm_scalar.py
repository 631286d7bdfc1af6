"""Scalar SpMM for narrow blocks (``r < 4``) and one activation column (``m == 1``).

With nothing to vectorise along ``m`` and fewer than 4 output rows per block, each output row
is a scalar dot product of its nonzeros with the gathered X values. The kernel is memory bound
on ``data`` + ``indices`` (regime B of the kernel design notes); threads split the block rows.
X is seen as a row-major ``(rows, k)`` matrix: layout ``"MK"`` with ``m == 1``, or ``"KM"``
with ``m == 1`` where the rows are the batch.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .spmm import SpmmSpec


def scalar_body(spec: SpmmSpec):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)``."""
    n, k, r, c = spec.n, spec.k, spec.r, spec.c
    nbr, rows = spec.block_rows, spec.rows
    k_ragged = k % c != 0
    n_ragged = spec.n_tail != r
    epi = spec.epilogue
    VL = spec.lanes

    @T.macro
    def body_generic(Xf, data, indices, indptr, B, Yf):
        for it in T.parallel(rows * nbr):
            mi = T.meta_var(it // nbr)
            br = T.meta_var(it % nbr)
            acc = T.alloc_buffer((r,), "float32", scope="global")
            for ri in T.unroll(r):
                acc[ri] = T.float32(0)
            for b in range(indptr[br], indptr[br + 1]):
                for j in T.unroll(c):
                    kc = T.meta_var(indices[b] * c + j)
                    for ri in T.unroll(r):
                        if k_ragged:
                            acc[ri] = acc[ri] + data[b, j, ri] * T.if_then_else(
                                kc < k, Xf[mi * k + T.min(kc, k - 1)], T.float32(0)
                            )
                        else:
                            acc[ri] = acc[ri] + data[b, j, ri] * Xf[mi * k + kc]
            for ri in T.unroll(r):
                if n_ragged:
                    if br * r + ri < n:
                        Yf[mi * n + br * r + ri] = epi(acc[ri], B, br * r + ri)
                else:
                    Yf[mi * n + br * r + ri] = epi(acc[ri], B, br * r + ri)

    @T.macro
    def body_rows(Xf, data, indices, indptr, B, Yf):
        # r == 1: the nonzeros of a row, data[e, j, 0] for e in indptr[i]:indptr[i+1], are
        # contiguous; VL independent partial sums break the FMA latency chain.
        for it in T.parallel(rows * nbr):
            mi = T.meta_var(it // nbr)
            i = T.meta_var(it % nbr)
            acc = T.alloc_buffer((VL,), "float32", scope="global")
            for v in T.vectorized(VL):
                acc[v] = T.float32(0)
            for q in range((indptr[i + 1] - indptr[i]) * c // VL):
                for v in T.vectorized(VL):
                    e = T.meta_var(indptr[i] * c + q * VL + v)
                    kc = T.meta_var(indices[e // c] * c + e % c)
                    if k_ragged:
                        acc[v] = acc[v] + data[e // c, e % c, 0] * T.if_then_else(
                            kc < k, Xf[mi * k + T.min(kc, k - 1)], T.float32(0)
                        )
                    else:
                        acc[v] = acc[v] + data[e // c, e % c, 0] * Xf[mi * k + kc]
            for q in range((indptr[i + 1] - indptr[i]) * c % VL):
                e = T.meta_var((indptr[i + 1] - indptr[i]) * c // VL * VL + indptr[i] * c + q)
                kc = T.meta_var(indices[e // c] * c + e % c)
                if k_ragged:
                    acc[q] = acc[q] + data[e // c, e % c, 0] * T.if_then_else(
                        kc < k, Xf[mi * k + T.min(kc, k - 1)], T.float32(0)
                    )
                else:
                    acc[q] = acc[q] + data[e // c, e % c, 0] * Xf[mi * k + kc]
            for v in range(1, VL):
                acc[0] = acc[0] + acc[v]
            Yf[mi * n + i] = epi(acc[0], B, i)

    body = body_rows if r == 1 else body_generic

    return body
