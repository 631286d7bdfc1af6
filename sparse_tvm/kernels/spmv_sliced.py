"""Matrix-vector product with a 1x1 (or ``1 x c``) weight in sliced ELLPACK order.

One activation column (``m == 1``; or ``"KM"`` with ``m == 1``, the rows of X the batch):
each output is a dot product of a weight row's nonzeros with X values gathered by column.
The weight comes in :mod:`~sparse_tvm.formats.sliced_ell` order, so one vector register
holds the partial sums of ``lanes`` rows (a slice) and each step is a vector load of
``lanes`` values and of their columns, a gather of X and one FMA: no per-row horizontal sum
and no scalar tail. The slices' outputs are written back through the row permutation.

The gather stays a sequence of scalar loads inserted into the vector (what LLVM makes of a
vectorised indexed load): AVX-512's ``vgatherdps`` ran this kernel 1.3-2x slower on the
Zen 4 machine it was written on (BERT FFN weights, 90 % 1x1: 47-69 us against 31-44 us).
Threads split the slices (and the rows of X).

Arguments (the signature of :func:`~sparse_tvm.kernels.spmm.wrap_kernel`): ``data`` the
``(steps * lanes, 1, 1)`` values, ``indices`` the ``steps * lanes`` columns, ``indptr`` the
slice pointers (``slices + 1``) followed by the row of each slice lane (``slices * lanes``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm.script import tirx as T

from ..formats.block_sparse import BlockSparseWeight
from ..formats.sliced_ell import sliced_ell
from .spmm import SpmmSpec

__all__ = ["SlicedKnobs", "default_sliced_knobs", "sliced_arrays", "sliced_body"]

# rows sorted together by nonzero count, in vector registers' worth of rows
WINDOW_SLICES = 16


@dataclass(frozen=True)
class SlicedKnobs:
    """``window``: rows sorted by nonzero count together (a multiple of the lanes; the lanes
    themselves: the weight's row order); ``chunk``: 0 gathers X element by element (this
    module's kernel), 32 takes the columns in chunks of 32 and gathers by permutes
    (:mod:`.spmv_chunked`, AVX-512 only)."""

    window: int
    chunk: int = 0


def default_sliced_knobs(spec: SpmmSpec) -> SlicedKnobs:
    """Windows of :data:`WINDOW_SLICES` slices; columns in chunks of 32 on AVX-512."""
    from .spmv_chunked import CHUNK, LANES

    return SlicedKnobs(window=WINDOW_SLICES * spec.lanes, chunk=CHUNK if spec.lanes == LANES else 0)


def sliced_arrays(
    weight: BlockSparseWeight, lanes: int, knobs: SlicedKnobs
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` as :func:`sliced_body`'s kernel reads them (module doc)."""
    ell = sliced_ell(weight, lanes, knobs.window)
    data = ell.values.reshape(-1, 1, 1)
    return data, ell.columns.reshape(-1), np.concatenate([ell.slice_ptr, ell.rows])


def slices_of(spec: SpmmSpec) -> int:
    return -(-spec.n // spec.lanes)


def sliced_indptr_size(spec: SpmmSpec) -> int:
    """Entries of the kernel's ``indptr``: slice pointers, then the rows of the lanes."""
    slices = slices_of(spec)
    return slices + 1 + slices * spec.lanes


def slice_store(spec: SpmmSpec, lanes: int):
    """The TVMScript macro ``store_slice(Yf, B, acc, indptr, s, mi)``: the ``lanes`` sums in
    ``acc`` of slice ``s`` through the epilogue into the rows ``indptr`` names after the
    slice pointers (the padding lanes of a last, short slice store nothing). Shared by the
    sliced and chunked kernels, whose ``indptr`` both start with the slice pointers and rows."""
    n, L = spec.n, lanes
    slices = -(-n // L)
    ragged = n % L != 0
    epi = spec.epilogue

    @T.macro
    def store(Yf, B, acc, indptr, s, v, mi):
        row = T.meta_var(indptr[slices + 1 + s * L + v])
        Yf[mi * n + row] = epi(acc[v], B, row)

    @T.macro
    def store_slice(Yf, B, acc, indptr, s, mi):
        for v in range(L):
            if ragged:
                if s * L + v < n:
                    store(Yf, B, acc, indptr, s, v, mi)
            else:
                store(Yf, B, acc, indptr, s, v, mi)

    return store_slice


def sliced_body(spec: SpmmSpec):
    """Return the TVMScript macro ``body(Xf, data, indices, indptr, B, Yf)``."""
    k, L = spec.k, spec.lanes
    slices = slices_of(spec)
    store_slice = slice_store(spec, L)

    @T.macro
    def body(Xf, data, indices, indptr, B, Yf):
        for it in T.parallel(spec.rows * slices):
            mi = T.meta_var(it // slices)
            s = T.meta_var(it % slices)
            acc = T.alloc_buffer((L,), "float32", scope="global")
            for v in T.vectorized(L):
                acc[v] = T.float32(0)
            for t in range(indptr[s], indptr[s + 1]):
                for v in T.vectorized(L):
                    acc[v] = acc[v] + data[t * L + v, 0, 0] * Xf[mi * k + indices[t * L + v]]
            store_slice(Yf, B, acc, indptr, s, mi)

    return body
