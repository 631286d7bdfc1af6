"""Sliced ELLPACK (SELL-C-sigma) order of an unstructured (1x1) sparse weight, for SpMV.

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

__all__ = ["SlicedEll", "sliced_ell"]


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
    """``weight`` (1x1 blocks) in sliced ELLPACK order with slices of ``lanes`` rows, rows
    sorted by nonzero count (longest first) within windows of ``window`` rows (a multiple
    of ``lanes``; ``window <= lanes`` keeps the weight's row order)."""
    if weight.block != (1, 1):
        raise ValueError(f"sliced ELLPACK takes a 1x1 (CSR) weight, got blocks {weight.block}")
    n = weight.shape[0]
    indptr = weight.indptr.astype(np.int64)
    counts = np.diff(indptr)
    window = max(lanes, window // lanes * lanes)
    # longest rows first within each window; stable, so equal counts keep their order
    order = np.lexsort((-counts, np.arange(n) // window))
    slices = -(-n // lanes)
    padded = np.zeros(slices * lanes, np.int64)
    padded[:n] = counts[order]
    widths = padded.reshape(slices, lanes).max(axis=1)
    slice_ptr = np.zeros(slices + 1, np.int64)
    np.cumsum(widths, out=slice_ptr[1:])
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
        values.reshape(-1)[slot] = weight.data[:nnz, 0, 0]
        columns.reshape(-1)[slot] = weight.indices[:nnz]
    rows = np.full(slices * lanes, n, np.int32)
    rows[:n] = order
    return SlicedEll(values, columns, slice_ptr.astype(np.int32), rows)
