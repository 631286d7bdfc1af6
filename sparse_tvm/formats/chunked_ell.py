"""Sliced ELLPACK in column windows: each step's X values come from two registers.

In plain sliced ELLPACK (:mod:`.sliced_ell`) each step of a slice gathers ``lanes`` X values
from anywhere in X: ``lanes`` scalar loads and inserts, about 10 cycles per 16 nonzeros on
AVX-512, the bound of that kernel. Here every step of a slice reads a window of ``chunk``
consecutive columns (32: two AVX-512 registers of X) and holds, for each of the slice's rows,
at most one nonzero inside it, its column as an offset into the window (one byte). The kernel
loads the window's X into two registers and gathers the step's 16 values with one
two-register permute (``vpermi2ps``).

The windows slide: each row's nonzeros are taken in column order, and a step's window starts
at the first column any of the slice's rows has left, rounded down to a multiple of ``align``
(aligned loads of X); every row whose next nonzero falls inside the window gives it to the
step, the others are padded. The row with the first column left always advances, so a slice
takes about as many steps as its rows need, and rows whose nonzeros run ahead wait. On a 90 %
unstructured weight in slices of 16 rows that stores about 1.45x the nonzeros (1.5x with
windows 8-aligned; windows at fixed multiples of 32 columns, each as many steps as the
slice's longest row has nonzeros in it: 2x), at 5 bytes a stored element (value and one-byte
offset) against 8 for plain sliced ELLPACK's 1-2 % padding. A window may run past ``k``
(:func:`window_columns`: the columns of X the windows read).

Rows are ordered as in :func:`~.sliced_ell.sliced_ell` (sorted by nonzero count within windows
of ``window`` rows); ``1 x c`` blocks are taken element by element as there.

The arrays (``ns`` slices, ``S`` steps over all slices):

``values`` ``(S, lanes)`` float32, ``offsets`` ``(S, lanes)`` uint8
    lane ``l`` of step ``t``: the value and the column offset in the step's window
    (padding: 0.0, 0).
``slice_ptr`` ``(ns + 1,)``
    the steps of slice ``s`` are ``slice_ptr[s]:slice_ptr[s + 1]``, windows left to right.
``step_start`` ``(S,)``
    the first column of each step's window (a multiple of ``align``).
``rows`` ``(ns * lanes,)``
    as :class:`~.sliced_ell.SlicedEll`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .block_sparse import BlockSparseWeight
from .sliced_ell import _elements, _slices

__all__ = ["ChunkedEll", "chunked_ell", "chunked_steps", "window_columns"]


@dataclass(frozen=True)
class ChunkedEll:
    """A one-row-block sparse weight in windowed sliced ELLPACK order (see the module doc)."""

    values: np.ndarray  # (steps, lanes) float32
    offsets: np.ndarray  # (steps, lanes) uint8
    slice_ptr: np.ndarray  # (slices + 1,) int32
    step_start: np.ndarray  # (steps,) int32
    rows: np.ndarray  # (slices * lanes,) int32
    chunk: int

    @property
    def steps(self) -> int:
        return int(self.values.shape[0])


@dataclass(frozen=True)
class _Layout:
    order: np.ndarray  # the rows in slice order
    slice_ptr: np.ndarray  # (slices + 1,) int64
    slot: np.ndarray  # each element's place in the (steps * lanes) arrays
    step_start: np.ndarray  # (steps,) each step's first column
    values: np.ndarray  # the elements, each row's in column order
    columns: np.ndarray


def window_columns(k: int, chunk: int, align: int) -> int:
    """The columns of X (zeros past ``k``) the windows of a ``k``-column weight may read."""
    return (max(k, 1) - 1) // align * align + chunk


def _layout(weight: BlockSparseWeight, lanes: int, window: int, chunk: int, align: int) -> _Layout:
    """Place every element: the slices take steps in rounds, each round one step of every
    slice with nonzeros left (windows as in the module doc)."""
    if weight.block[0] != 1:
        raise ValueError(
            f"chunked ELLPACK takes blocks of one row (1x1, 1xc), got blocks {weight.block}"
        )
    if not 1 <= chunk <= 256:
        raise ValueError(f"the chunk must hold 1 to 256 columns (one-byte offsets), not {chunk}")
    if not 1 <= align <= chunk:
        raise ValueError(f"windows must be aligned to 1 to chunk ({chunk}) columns, not {align}")
    n, k = weight.shape
    values, columns, element_ptr = _elements(weight)
    counts = np.diff(element_ptr)
    order, _ = _slices(counts, lanes, window)
    slices = -(-n // lanes)
    row_of = np.repeat(np.arange(n), counts)
    by_column = np.lexsort((columns, row_of))  # a row's elements in column order
    values, columns = values[by_column], columns[by_column].astype(np.int64)
    first = np.zeros(slices * lanes, np.int64)  # lane l's elements: first[l] .. + count[l]
    count = np.zeros(slices * lanes, np.int64)
    first[:n], count[:n] = element_ptr[:-1][order], counts[order]
    first, count = first.reshape(slices, lanes), count.reshape(slices, lanes)
    taken = np.zeros_like(count)
    round_of = np.zeros(len(columns), np.int64)  # each element's step within its slice
    rounds = []  # (the slices stepping, their windows' first columns)
    active = np.flatnonzero(count.any(axis=1))
    while active.size:
        left = taken[active] < count[active]
        element = first[active] + np.where(left, taken[active], 0)
        following = np.where(left, columns[np.minimum(element, len(columns) - 1)], k)
        start = following.min(axis=1) // align * align
        take = left & (following < start[:, None] + chunk)
        round_of[element[take]] = len(rounds)
        taken[active] += take
        rounds.append((active, start))
        active = active[(taken[active] < count[active]).any(axis=1)]
    steps = np.zeros(slices, np.int64)
    for stepping, _ in rounds:
        steps[stepping] += 1
    slice_ptr = np.zeros(slices + 1, np.int64)
    np.cumsum(steps, out=slice_ptr[1:])
    step_start = np.zeros(max(1, int(slice_ptr[-1])), np.int64)
    for r, (stepping, start) in enumerate(rounds):
        step_start[slice_ptr[stepping] + r] = start
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    p = position[row_of]  # (row_of is in column order within rows too: rows do not move)
    slot = (slice_ptr[p // lanes] + round_of) * lanes + p % lanes
    return _Layout(order, slice_ptr, slot, step_start, values, columns)


def chunked_steps(
    weight: BlockSparseWeight, lanes: int, window: int, chunk: int, align: int = 1
) -> int:
    """:attr:`ChunkedEll.steps` of :func:`chunked_ell`'s result, without filling the arrays."""
    return len(_layout(weight, lanes, window, chunk, align).step_start)


def chunked_ell(
    weight: BlockSparseWeight, lanes: int, window: int, chunk: int, align: int = 1
) -> ChunkedEll:
    """``weight`` (``1 x c`` blocks) in windowed sliced ELLPACK order: slices of ``lanes``
    rows (sorted by stored count within windows of ``window`` rows), each step reading a
    window of ``chunk`` consecutive columns (at most 256: one-byte offsets) that starts at a
    multiple of ``align``."""
    layout = _layout(weight, lanes, window, chunk, align)
    n = weight.shape[0]
    total = len(layout.step_start)
    values = np.zeros((total, lanes), np.float32)
    offsets = np.zeros((total, lanes), np.uint8)
    values.reshape(-1)[layout.slot] = layout.values
    start_of = layout.step_start[layout.slot // lanes]
    offsets.reshape(-1)[layout.slot] = (layout.columns - start_of).astype(np.uint8)
    slices = len(layout.slice_ptr) - 1
    rows = np.full(slices * lanes, n, np.int32)
    rows[:n] = layout.order
    return ChunkedEll(
        values,
        offsets,
        layout.slice_ptr.astype(np.int32),
        layout.step_start.astype(np.int32),
        rows,
        chunk,
    )
