"""Sliced ELLPACK (SELL-C-sigma) order of a sparse weight with one-row blocks, for SpMV.

A matrix-vector product with a CSR weight vectorised along a row's nonzeros needs a horizontal
sum per row and a scalar tail for the last ``count % lanes`` nonzeros: at 77 nonzeros a row
(BERT's 3072x768 at 90 %) the tails are a fifth of the work. Sliced ELLPACK (Kreutzer et al.,
"A unified sparse matrix data format for efficient general sparse matrix-vector multiplication
on modern processors with wide SIMD units", SIAM J. Sci. Comput. 2014) turns that around: a
*slice* of ``lanes`` rows is processed together, one row per vector lane, and step ``t`` of a
slice holds the ``t``-th nonzero of each of its rows side by side. A slice is as long as its
longest row; shorter rows are padded with zeros. So that a slice's rows have about the same
length, the rows are sorted by their nonzero count within windows of ``window`` rows (the
*sigma* of SELL-C-sigma): padding stays at 1-2 % on pruned transformer weights while every
thread's share of the slices keeps the weight's mix of long and short rows.

A weight of ``1 x c`` blocks is taken element by element: each stored block gives its ``c``
values (zeros inside a block included, columns past ``k`` dropped), so a 1x4-pruned weight runs
the same kernel as a CSR one.

The arrays (``ns`` slices of ``lanes`` rows, ``S`` steps over all slices):

``values`` ``(S, lanes)``, ``columns`` ``(S, lanes)``
    step ``t`` of all slices: lane ``l`` of row ``slice_ptr[s] + t`` holds the ``t``-th
    nonzero of the slice's ``l``-th row and its column (padding: 0.0 and column 0).
``slice_ptr`` ``(ns + 1,)``
    the steps of slice ``s`` are ``slice_ptr[s]:slice_ptr[s + 1]``.
``rows`` ``(ns * lanes,)``
    the weight row lane ``l`` of slice ``s`` computes: ``rows[s * lanes + l]``; positions at
    or past ``n`` (the last slice's padding lanes) compute nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .block_sparse import BlockSparseWeight

__all__ = ["SlicedEll", "sliced_ell", "sliced_steps"]


@dataclass(frozen=True)
class SlicedEll:
    """A 1x1 sparse weight in sliced ELLPACK order (see the module doc)."""

    values: np.ndarray  # (steps, lanes) float32
    columns: np.ndarray  # (steps, lanes) int32
    slice_ptr: np.ndarray  # (slices + 1,) int32
    rows: np.ndarray  # (slices * lanes,) int32

    @property
    def lanes(self) -> int:
        return int(self.values.shape[1])

    @property
    def slices(self) -> int:
        return int(self.slice_ptr.shape[0]) - 1

    @property
    def steps(self) -> int:
        """Rows of ``values`` (at least 1: a weight without nonzeros keeps one padding step)."""
        return int(self.values.shape[0])


def sliced_ell(weight: BlockSparseWeight, lanes: int, window: int) -> SlicedEll:
    """``weight`` (``1 x c`` blocks) in sliced ELLPACK order with slices of ``lanes`` rows,
    rows sorted by stored count (longest first) within windows of ``window`` rows (a multiple
    of ``lanes``; ``window <= lanes`` keeps the weight's row order)."""
    if weight.block[0] != 1:
        raise ValueError(
            f"sliced ELLPACK takes blocks of one row (1x1, 1xc), got blocks {weight.block}"
        )
    n = weight.shape[0]
    data, indices, indptr = _elements(weight)
    counts = np.diff(indptr)
    order, slice_ptr = _slices(counts, lanes, window)
    slices = len(slice_ptr) - 1
    steps = max(1, int(slice_ptr[-1]))
    values = np.zeros((steps, lanes), np.float32)
    columns = np.zeros((steps, lanes), np.int32)
    nnz = int(indptr[-1])
    if nnz:
        position = np.empty(n, np.int64)
        position[order] = np.arange(n)
        row_of = np.repeat(np.arange(n), counts)
        step = np.arange(nnz) - indptr[row_of]
        p = position[row_of]
        slot = (slice_ptr[p // lanes] + step) * lanes + p % lanes
        values.reshape(-1)[slot] = data
        columns.reshape(-1)[slot] = indices
    rows = np.full(slices * lanes, n, np.int32)
    rows[:n] = order
    return SlicedEll(values, columns, slice_ptr.astype(np.int32), rows)


def sliced_steps(weight: BlockSparseWeight, lanes: int, window: int) -> int:
    """:attr:`SlicedEll.steps` of :func:`sliced_ell`'s result, without filling the arrays."""
    counts = np.diff(_elements(weight)[2])
    return max(1, int(_slices(counts, lanes, window)[1][-1]))


def _slices(counts: np.ndarray, lanes: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """The row order (rows sorted by ``counts``, longest first, within windows) and the slice
    pointers of rows with ``counts`` stored values."""
    n = len(counts)
    window = max(lanes, window // lanes * lanes)
    # stable: equal counts keep their order
    order = np.lexsort((-counts, np.arange(n) // window))
    slices = -(-n // lanes)
    padded = np.zeros(slices * lanes, np.int64)
    padded[:n] = counts[order]
    slice_ptr = np.zeros(slices + 1, np.int64)
    np.cumsum(padded.reshape(slices, lanes).max(axis=1), out=slice_ptr[1:])
    return order, slice_ptr


def _elements(weight: BlockSparseWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, columns, indptr)`` of a ``1 x c`` weight's stored elements, row by row."""
    k, c = weight.shape[1], weight.block[1]
    nnzb = weight.nnz_blocks
    indptr = weight.indptr.astype(np.int64)
    columns = (weight.indices[:nnzb, None].astype(np.int64) * c + np.arange(c)).reshape(-1)
    values = weight.data[:nnzb, :, 0].reshape(-1)
    inside = columns < k  # the last block column may pass k
    rows = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    per_block = inside.reshape(nnzb, c).sum(axis=1)
    counts = np.bincount(rows, per_block, minlength=len(indptr) - 1).astype(np.int64)
    element_ptr = np.zeros(len(indptr), np.int64)
    np.cumsum(counts, out=element_ptr[1:])
    return values[inside], columns[inside].astype(np.int32), element_ptr
