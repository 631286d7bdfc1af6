"""Column-vector SpMM: vectorised along the ``m`` columns of the activations.

X is seen as ``(batch, k, m)`` with the ``m`` values of one input feature contiguous (layout
``"KM"``: a 1x1 conv in NCHW or an im2col output). For layout ``"MK"`` the kernel first
transposes X into a ``(k, m)`` workspace (GEMM-style packing, ``m * k`` copies against
``nnz * m`` FMAs) and stores Y transposed.

* accumulators ``acc[r, MV]``: the ``r`` output rows of a block row x ``MV`` columns, i.e.
  ``r * MV / VL`` vector registers (AVX-512: ``MV = 128`` for CSR, ``64`` for ``r = 4``,
  ``16`` for ``r = 16``);
* per nonzero block, input column ``j`` and row ``i``: ``MV / VL`` vector loads of an X row
  (reused by the ``r`` rows of the block), one broadcast weight, ``MV / VL`` FMAs;
* bias and ReLU on the way out.

The parallel loop is the fused ``(batch, m tile, block row)`` space, so each thread takes a
contiguous range of m tiles and block rows. The last m tile is shifted back to end at ``m``
(overlapping its neighbour, recomputing identical values) so there is no ragged tile.
"""

from __future__ import annotations

from tvm.script import tirx as T

from .spmm import _ON_STACK, SpmmSpec


def colvec_tiles(spec: SpmmSpec) -> int:
    """Knob ``MV``: columns of m per register tile (a multiple of the vector width if m allows)."""
    vl = spec.lanes
    vectors = max(1, min(8, 16 // spec.r))  # <= 16 accumulator registers
    mv = vl * vectors
    if spec.m >= mv:
        return mv
    if spec.m >= vl:
        return vl * (spec.m // vl)
    return spec.m


def colvec_body(spec: SpmmSpec):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)``."""
    MV = colvec_tiles(spec)
    n, k, r, c, m = spec.n, spec.k, spec.r, spec.c, spec.m
    nbr, batch = spec.block_rows, spec.batch
    ntile = -(-m // MV)
    k_ragged = k % c != 0
    n_ragged = spec.n_tail != r
    packed = spec.x_layout == "MK"
    epi = spec.epilogue

    @T.macro
    def accumulate(acc, XT, xbase, m0, data, indices, indptr, br):
        for b in range(indptr[br], indptr[br + 1]):
            for j in T.unroll(c):
                kc = T.meta_var(indices[b] * c + j)
                for ri in T.unroll(r):
                    for v in T.vectorized(MV):
                        if k_ragged:
                            acc[ri, v] = acc[ri, v] + data[b, j, ri] * T.if_then_else(
                                kc < k, XT[xbase + T.min(kc, k - 1) * m + m0 + v], T.float32(0)
                            )
                        else:
                            acc[ri, v] = acc[ri, v] + data[b, j, ri] * XT[xbase + kc * m + m0 + v]

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        if packed:
            XT = T.alloc_buffer((k * m,), "float32")
            for kc in T.parallel(k):
                for mi in range(m):
                    XT[kc * m + mi] = Xf[mi * k + kc]
        for it in T.parallel(batch * ntile * nbr):
            bt = T.meta_var(it // (ntile * nbr))
            t = T.meta_var(it // nbr % ntile)
            br = T.meta_var(it % nbr)
            m0 = T.meta_var(T.min(t * MV, m - MV))
            acc = T.alloc_buffer((r, MV), "float32", scope="local", annotations=_ON_STACK)
            for ri in T.unroll(r):
                for v in T.vectorized(MV):
                    acc[ri, v] = T.float32(0)
            if packed:
                accumulate(acc, XT, 0, m0, data, indices, indptr, br)
                for ri in T.unroll(r):
                    if n_ragged:
                        if br * r + ri < n:
                            for v in T.unroll(MV):
                                Yf[(m0 + v) * n + br * r + ri] = epi(acc[ri, v], B, br * r + ri)
                    else:
                        for v in T.unroll(MV):
                            Yf[(m0 + v) * n + br * r + ri] = epi(acc[ri, v], B, br * r + ri)
            else:
                accumulate(acc, Xf, bt * k * m, m0, data, indices, indptr, br)
                for ri in T.unroll(r):
                    if n_ragged:
                        if br * r + ri < n:
                            for v in T.vectorized(MV):
                                Yf[bt * n * m + (br * r + ri) * m + m0 + v] = epi(
                                    acc[ri, v], B, br * r + ri
                                )
                    else:
                        for v in T.vectorized(MV):
                            Yf[bt * n * m + (br * r + ri) * m + m0 + v] = epi(
                                acc[ri, v], B, br * r + ri
                            )

    return body
