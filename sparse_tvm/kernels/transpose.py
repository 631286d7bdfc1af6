"""Vectorised matrix transposes for the kernels that repack their operands (TVMScript).

A transpose written as TIR loops compiles to one scalar load and store per element (TVM's
LLVM code generator scalarises strided vector loads): ~170 us for a 3136 x 256 float32
matrix on two AVX-512 cores. Here every ``t x t`` tile is loaded as ``t`` row vectors and
transposed in registers by ``log2(t)`` stages of two-input shuffles (stage ``j`` swaps bit
``j`` of the row and column indices, the classic butterfly), then stored as ``t`` column
vectors: ~62 us for the same matrix, memory bound. The edges that do not fill a tile take
the scalar path.

The shuffles are built in Python and emitted with the IR builder (``T.Bind`` per vector, so
LLVM sees each intermediate once), from a function called inside TVMScript.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T
from tvm.tirx import IntImm, Ramp, Shuffle

__all__ = [
    "emit_tile_transpose",
    "emit_vectors_transpose",
    "tile_size",
    "transpose_kernel",
    "transpose_block_macro",
    "transpose_macro",
    "transpose_rows_macro",
]


def tile_size(lanes: int) -> int:
    """The tile edge for a machine with ``lanes`` float32 lanes: one vector, 4 to 16."""
    return max(4, min(16, lanes))


def emit_tile_transpose(src, src_base, src_stride, dst, dst_base, dst_stride, t: int) -> None:
    """Emit ``dst[dst_base + c * dst_stride + r] = src[src_base + r * src_stride + c]`` for
    ``r, c < t`` (``t`` a power of two) as vector loads, shuffles and vector stores.

    Call it from TVMScript: the statements go to the current IR builder frame.
    """
    vector = f"float32x{t}"
    rows = [src.vload([src_base + i * src_stride], vector) for i in range(t)]
    emit_vectors_transpose(rows, dst, dst_base, dst_stride, t)


def emit_vectors_transpose(rows: list, dst, dst_base, dst_stride, t: int) -> None:
    """Emit ``dst[dst_base + c * dst_stride + r] = rows[r][c]`` for the ``t`` vectors ``rows``
    (``float32x{t}`` expressions, ``t`` a power of two): the vectors become the columns."""
    if t & (t - 1) or t < 2 or len(rows) != t:
        raise ValueError(f"need a power of two >= 2 of vectors, got t={t}, {len(rows)} rows")
    rows = [T.Bind(row) for row in rows]
    bit = 1
    while bit < t:
        stage = []
        for r in range(t):
            low, high = (rows[r], rows[r ^ bit]) if not r & bit else (rows[r ^ bit], rows[r])
            row_bit = bit if r & bit else 0
            # new[r][c] = old[r with this bit := c's][c with this bit := r's]
            lanes = [(t if c & bit else 0) + ((c & ~bit) | row_bit) for c in range(t)]
            stage.append(T.Bind(Shuffle([low, high], [IntImm("int32", i) for i in lanes])))
        rows = stage
        bit <<= 1
    for c in range(t):
        T.buffer_store(dst, rows[c], [Ramp(dst_base + c * dst_stride, 1, t)])


def transpose_macro(lanes: int):
    """A TVMScript macro ``transpose(src, dst, rows, cols)``: ``dst`` (flat ``cols x rows``)
    becomes the transpose of ``src`` (flat ``rows x cols``); ``rows`` and ``cols`` are Python
    ints. Parallel over column tiles; full tiles vectorised, the edges scalar."""
    t = tile_size(lanes)

    @T.macro
    def transpose(src, dst, rows, cols):
        full_r = T.meta_var(rows // t)
        full_c = T.meta_var(cols // t)
        for tc in T.parallel((cols + t - 1) // t):
            if tc < full_c:
                for tr in range(full_r):
                    emit_tile_transpose(src, tr * t * cols + tc * t, cols, dst,
                                        tc * t * rows + tr * t, rows, t)  # fmt: skip
            else:
                for tr in range(full_r):
                    for cc in range(cols - full_c * t):
                        for rr in T.unroll(t):
                            dst[(tc * t + cc) * rows + tr * t + rr] = src[
                                (tr * t + rr) * cols + tc * t + cc
                            ]
            if rows % t != 0:
                for cc in range(T.min(t, cols - tc * t)):
                    for rr in range(rows - full_r * t):
                        dst[(tc * t + cc) * rows + full_r * t + rr] = src[
                            (full_r * t + rr) * cols + tc * t + cc
                        ]

    return transpose


def transpose_block_macro(lanes: int):
    """A TVMScript macro ``transpose_block(src, dst, row0, nrows, col0, ncols, rows, cols,
    base, src_base)``: the block ``row0 : row0 + nrows`` x ``col0 : col0 + ncols`` of ``src``
    (flat ``rows x cols`` from element ``src_base``) goes transposed to ``dst`` (flat ``cols x
    rows`` from element ``base``);
    ``rows`` and ``cols`` are Python ints, the rest may be expressions. Serial: a parallel
    kernel calls it for the part one thread computed, so the transpose reads what that
    thread's cache holds and no other core's (full tiles vectorised, the edges scalar)."""
    t = tile_size(lanes)

    @T.macro
    def transpose_block(src, dst, row0, nrows, col0, ncols, rows, cols, base, src_base):
        for tr in range(nrows // t):
            r0 = T.meta_var(row0 + tr * t)
            for tc in range(ncols // t):
                emit_tile_transpose(src, src_base + r0 * cols + col0 + tc * t, cols, dst,
                                    base + (col0 + tc * t) * rows + r0, rows, t)  # fmt: skip
            for cc in range(ncols % t):
                c = T.meta_var(col0 + ncols // t * t + cc)
                for rr in T.unroll(t):
                    dst[base + c * rows + r0 + rr] = src[src_base + (r0 + rr) * cols + c]
        for rr in range(nrows % t):
            r = T.meta_var(row0 + nrows // t * t + rr)
            for cc in range(ncols):
                dst[base + (col0 + cc) * rows + r] = src[src_base + r * cols + col0 + cc]

    return transpose_block


def transpose_rows_macro(lanes: int):
    """A TVMScript macro ``transpose_rows(src, dst, row0, count, rows, cols, base)``: rows
    ``row0 : row0 + count`` of ``src`` (flat ``rows x cols``) become columns ``row0 : row0 +
    count`` of ``dst`` (flat ``cols x rows`` from element ``base``): the
    :func:`transpose_block_macro` of whole rows."""
    transpose_block = transpose_block_macro(lanes)

    @T.macro
    def transpose_rows(src, dst, row0, count, rows, cols, base):
        transpose_block(src, dst, row0, count, 0, cols, rows, cols, base, 0)

    return transpose_rows


def transpose_kernel(rows: int, cols: int, lanes: int = 16) -> tvm.tirx.PrimFunc:
    """A standalone ``(A, B)`` kernel, ``B = A.T`` for flat float32 buffers (tests, benchmarks)."""
    transpose = transpose_macro(lanes)

    @T.prim_func
    def kernel(A: T.Buffer((rows * cols,), "float32"), B: T.Buffer((cols * rows,), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        transpose(A, B, rows, cols)

    return kernel
