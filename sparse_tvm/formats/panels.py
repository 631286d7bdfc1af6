"""K-panelled order of a block-sparse weight's arrays, for kernels that tile the reduction.

A kernel that keeps a slab of the activations in L1 works through the weight one *panel* of
``panel`` block columns at a time: all block rows of panel 0, then of panel 1, ... Its
``indptr`` therefore has one entry per (panel, block row): the blocks of block row ``i`` in
panel ``q`` are ``indptr[q * nbr + i] : indptr[q * nbr + i + 1]``, ``nbr`` the block rows.
``indices`` stay block-column indices of the whole weight (not of the panel), sorted within
each (panel, block row); ``data`` is reordered with them. With one panel this is the
weight's own order.
"""

from __future__ import annotations

import numpy as np

from .block_sparse import BlockSparseWeight

__all__ = ["panel_count", "panel_order"]


def panel_count(k_blocks: int, panel: int) -> int:
    """Panels of ``panel`` block columns that cover ``k_blocks`` block columns (>= 1;
    ``panel < 1``: one)."""
    if panel < 1:
        return 1
    return max(1, -(-k_blocks // panel))


def panel_order(weight: BlockSparseWeight, panel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(data, indices, indptr)`` of ``weight`` in K-panelled order (see the module doc);
    ``indptr`` has ``panel_count * nbr + 1`` entries. ``panel < 1``: one panel, the weight's
    own arrays."""
    panels = panel_count(-(-weight.shape[1] // weight.block[1]), panel)
    if panels == 1:
        return weight.data, weight.indices, weight.indptr
    nbr = weight.indptr.shape[0] - 1
    nnz = weight.nnz_blocks
    rows = np.repeat(np.arange(nbr, dtype=np.int64), np.diff(weight.indptr))
    key = weight.indices[:nnz].astype(np.int64) // panel * nbr + rows
    order = np.argsort(key, kind="stable")  # blocks are sorted by column within a row
    counts = np.bincount(key, minlength=panels * nbr)
    indptr = np.zeros(panels * nbr + 1, np.int32)
    np.cumsum(counts, out=indptr[1:])
    data, indices = weight.data, weight.indices
    if nnz:  # an empty weight keeps its one placeholder block
        data = np.ascontiguousarray(weight.data[:nnz][order])
        indices = np.ascontiguousarray(weight.indices[:nnz][order])
    return data, indices, indptr
