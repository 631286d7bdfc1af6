"""Scalar SpMM for narrow blocks (``r < 4``) and one activation column (``m == 1``).

With nothing to vectorise along ``m`` and fewer than 4 output rows per block, each output row
is a scalar dot product of its nonzeros with the gathered X values. The kernel is memory bound
on ``data`` + ``indices`` (regime B of the kernel design notes); threads split the block rows.
X is seen as a row-major ``(rows, k)`` matrix: layout ``"MK"`` with ``m == 1``, or ``"KM"``
with ``m == 1`` where the rows are the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from .spmm import SpmmSpec


@dataclass(frozen=True)
class ScalarKnobs:
    """Schedule knobs of the scalar kernel (the tuner searches them).

    ``accs``: vector registers of partial sums per row (``r == 1``: the nonzeros of a row are
    consumed ``accs * VL`` at a time); ``unroll``: unroll factor of the loop over a row's
    nonzeros (vector steps for ``r == 1``, nonzero blocks otherwise).
    """

    accs: int = 1
    unroll: int = 1


def scalar_body(spec: SpmmSpec, knobs: ScalarKnobs | None = None):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)`` for ``knobs``
    (default: one accumulator register, no unrolling)."""
    knobs = knobs if knobs is not None else ScalarKnobs()
    n, k, r, c = spec.n, spec.k, spec.r, spec.c
    nbr, rows = spec.block_rows, spec.rows
    k_ragged = k % c != 0
    n_ragged = spec.n_tail != r
    epi = spec.epilogue
    VL = spec.lanes * max(1, knobs.accs)
    U = max(1, knobs.unroll)

    @T.macro
    def block_fma(Xf, data, indices, acc, b, mi):
        for j in T.unroll(c):
            kc = T.meta_var(indices[b] * c + j)
            for ri in T.unroll(r):
                if k_ragged:
                    acc[ri] = acc[ri] + data[b, j, ri] * T.if_then_else(
                        kc < k, Xf[mi * k + T.min(kc, k - 1)], T.float32(0)
                    )
                else:
                    acc[ri] = acc[ri] + data[b, j, ri] * Xf[mi * k + kc]

    @T.macro
    def element_fma(Xf, data, indices, acc, slot, e, mi):
        # r == 1: stored value e of the row (block e // c, column e % c) into acc[slot]
        kc = T.meta_var(indices[e // c] * c + e % c)
        if k_ragged:
            acc[slot] = acc[slot] + data[e // c, e % c, 0] * T.if_then_else(
                kc < k, Xf[mi * k + T.min(kc, k - 1)], T.float32(0)
            )
        else:
            acc[slot] = acc[slot] + data[e // c, e % c, 0] * Xf[mi * k + kc]

    @T.macro
    def vector_fma(Xf, data, indices, acc, e0, mi):
        for v in T.vectorized(VL):
            element_fma(Xf, data, indices, acc, v, e0 + v, mi)

    @T.macro
    def body_generic(Xf, data, indices, indptr, B, Yf):
        for it in T.parallel(rows * nbr):
            mi = T.meta_var(it // nbr)
            br = T.meta_var(it % nbr)
            acc = T.alloc_buffer((r,), "float32", scope="global")
            for ri in T.unroll(r):
                acc[ri] = T.float32(0)
            if U == 1:
                for b in range(indptr[br], indptr[br + 1]):
                    block_fma(Xf, data, indices, acc, b, mi)
            else:
                start = T.meta_var(indptr[br])
                count = T.meta_var(indptr[br + 1] - indptr[br])
                for bo in range(count // U):
                    for bu in T.unroll(U):
                        block_fma(Xf, data, indices, acc, start + bo * U + bu, mi)
                for bt in range(count % U):
                    block_fma(Xf, data, indices, acc, start + count // U * U + bt, mi)
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
            steps = T.meta_var((indptr[i + 1] - indptr[i]) * c // VL)
            if U == 1:
                for q in range(steps):
                    vector_fma(Xf, data, indices, acc, indptr[i] * c + q * VL, mi)
            else:
                for qo in range(steps // U):
                    for qu in T.unroll(U):
                        vector_fma(Xf, data, indices, acc, indptr[i] * c + (qo * U + qu) * VL, mi)
                for qt in range(steps % U):
                    vector_fma(
                        Xf, data, indices, acc, indptr[i] * c + (steps // U * U + qt) * VL, mi
                    )
            for q in range((indptr[i + 1] - indptr[i]) * c % VL):
                element_fma(Xf, data, indices, acc, q, indptr[i] * c + steps * VL + q, mi)
            for v in range(1, VL):
                acc[0] = acc[0] + acc[v]
            Yf[mi * n + i] = epi(acc[0], B, i)

    body = body_rows if r == 1 else body_generic

    return body
