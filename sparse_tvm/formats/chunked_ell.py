"""Sliced ELLPACK with the columns in chunks: each step's X values come from two registers.

In plain sliced ELLPACK (:mod:`.sliced_ell`) each step of a slice gathers ``lanes`` X values
from anywhere in X: ``lanes`` scalar loads and inserts, about 10 cycles per 16 nonzeros on
AVX-512, the bound of that kernel. Here the columns are split into chunks of ``chunk`` (32:
two AVX-512 registers of X) and every slice walks the chunks in turn: step ``t`` of slice ``s``
in chunk ``c`` holds the ``t``-th nonzero of each of the slice's rows *within the chunk*, its
column as an offset into the chunk (one byte). The kernel loads the chunk's X once into two
registers and gathers a step's 16 values with one two-register permute (``vpermi2ps``).

The price is padding: a slice's steps in a chunk are as many as its longest row has nonzeros
in that chunk (about 2x the nonzeros on a 90 % unstructured weight, against 1-2 % for plain
sliced ELLPACK), at 5 bytes a stored element (value and one-byte offset) instead of 8.

Rows are ordered as in :func:`~.sliced_ell.sliced_ell` (sorted by nonzero count within windows
of ``window`` rows); ``1 x c`` blocks are taken element by element as there.

The arrays (``ns`` slices, ``nc`` chunks, ``S`` steps over all slices and chunks):

``values`` ``(S, lanes)`` float32, ``offsets`` ``(S, lanes)`` uint8
    lane ``l`` of step ``t``: the value and the column offset in its chunk (padding: 0.0, 0).
``slice_ptr`` ``(ns + 1,)``
    the steps of slice ``s`` are ``slice_ptr[s]:slice_ptr[s + 1]``, chunk by chunk.
``step_chunk`` ``(S,)``
    the chunk of each step (one loop over a slice's steps: a loop per chunk, a few steps
    long, would mispredict its exit every time).
``rows`` ``(ns * lanes,)``
    as :class:`~.sliced_ell.SlicedEll`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .block_sparse import BlockSparseWeight
from .sliced_ell import _elements, _slices

__all__ = ["ChunkedEll", "chunked_ell", "chunked_steps"]


@dataclass(frozen=True)
class ChunkedEll:
    """A one-row-block sparse weight in chunked sliced ELLPACK order (see the module doc)."""

    values: np.ndarray  # (steps, lanes) float32
    offsets: np.ndarray  # (steps, lanes) uint8
    slice_ptr: np.ndarray  # (slices + 1,) int32
    step_chunk: np.ndarray  # (steps,) int32
    rows: np.ndarray  # (slices * lanes,) int32
    chunk: int

    @property
    def steps(self) -> int:
        return int(self.values.shape[0])


def _layout(weight: BlockSparseWeight, lanes: int, window: int, chunk: int):
    """Row order, each element's (slice, lane, chunk, rank in its row's chunk), the steps of
    each (slice, chunk) and the elements' values and columns."""
    if weight.block[0] != 1:
        raise ValueError(
            f"chunked ELLPACK takes blocks of one row (1x1, 1xc), got blocks {weight.block}"
        )
    if not 1 <= chunk <= 256:
        raise ValueError(f"the chunk must hold 1 to 256 columns (one-byte offsets), not {chunk}")
    n, k = weight.shape
    data, columns, element_ptr = _elements(weight)
    counts = np.diff(element_ptr)
    order, _ = _slices(counts, lanes, window)
    slices, chunks = -(-n // lanes), -(-k // chunk)
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    row_of = np.repeat(np.arange(n), counts)
    which = columns.astype(np.int64) // chunk
    # elements are in row order, columns ascending: each (row, chunk) group is contiguous
    key = row_of * chunks + which
    rank = np.arange(len(key)) - np.searchsorted(key, key, side="left")
    p = position[row_of]
    per_lane = np.bincount(p * chunks + which, minlength=slices * lanes * chunks)
    steps = per_lane.reshape(slices, lanes, chunks).max(axis=1)
    return order, p, which, rank, steps, data, columns


def chunked_steps(weight: BlockSparseWeight, lanes: int, window: int, chunk: int) -> int:
    """:attr:`ChunkedEll.steps` of :func:`chunked_ell`'s result, without filling the arrays."""
    steps = _layout(weight, lanes, window, chunk)[4]
    return max(1, int(steps.sum()))


def chunked_ell(weight: BlockSparseWeight, lanes: int, window: int, chunk: int) -> ChunkedEll:
    """``weight`` (``1 x c`` blocks) in chunked sliced ELLPACK order: slices of ``lanes`` rows
    (sorted by stored count within windows of ``window`` rows), columns in chunks of
    ``chunk`` (at most 256: one-byte offsets)."""
    order, p, which, rank, steps, data, columns = _layout(weight, lanes, window, chunk)
    n = weight.shape[0]
    slices, chunks = steps.shape
    step_ptr = np.zeros(slices * chunks + 1, np.int64)  # steps of (slice, chunk), in order
    np.cumsum(steps.reshape(-1), out=step_ptr[1:])
    total = max(1, int(step_ptr[-1]))
    step_chunk = np.zeros(total, np.int32)
    step_chunk[: step_ptr[-1]] = np.repeat(np.tile(np.arange(chunks), slices), steps.reshape(-1))
    values = np.zeros((total, lanes), np.float32)
    offsets = np.zeros((total, lanes), np.uint8)
    slot = (step_ptr[(p // lanes) * chunks + which] + rank) * lanes + p % lanes
    values.reshape(-1)[slot] = data
    offsets.reshape(-1)[slot] = (columns % chunk).astype(np.uint8)
    rows = np.full(slices * lanes, n, np.int32)
    rows[:n] = order
    slice_ptr = step_ptr[::chunks].astype(np.int32)
    return ChunkedEll(values, offsets, slice_ptr, step_chunk, rows, chunk)
