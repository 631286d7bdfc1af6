"""Sliced ELLPACK order: the same nonzeros, a slice's rows in vector lanes, sorted rows."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.formats.sliced_ell import sliced_ell, sliced_steps


def random_weight(rng, n, k, sparsity, empty_rows):
    w = (rng.standard_normal((n, k)) * (rng.random((n, k)) >= sparsity)).astype(np.float32)
    w[list(empty_rows)] = 0
    return w


def rebuilt(ell, n, k) -> np.ndarray:
    """The dense weight the sliced arrays describe."""
    out = np.zeros((n, k), np.float32)
    L = ell.lanes
    for s in range(ell.slices):
        for t in range(ell.slice_ptr[s], ell.slice_ptr[s + 1]):
            for lane in range(L):
                if s * L + lane < n:
                    out[ell.rows[s * L + lane], ell.columns[t, lane]] += ell.values[t, lane]
    return out


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 70),
    k=st.integers(1, 50),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    c=st.sampled_from([1, 1, 3, 4]),
    lanes=st.sampled_from([4, 8, 16]),
    window_slices=st.integers(0, 5),
    seed=st.integers(0, 2**16),
)
def test_sliced_order_keeps_every_nonzero(n, k, sparsity, c, lanes, window_slices, seed):
    rng = np.random.default_rng(seed)
    w = random_weight(rng, n, k, sparsity, range(0, n, 5))
    bw = BlockSparseWeight.from_dense(w, (1, c))
    ell = sliced_ell(bw, lanes, window_slices * lanes)
    np.testing.assert_array_equal(rebuilt(ell, n, k), w)
    assert sliced_steps(bw, lanes, window_slices * lanes) == ell.steps  # the kernel's spec
    assert ell.slices == -(-n // lanes)
    assert sorted(ell.rows[:n]) == list(range(n))  # every row computed once
    assert (ell.rows[n:] == n).all()  # the last slice's padding lanes
    assert ell.values.dtype == np.float32 and ell.columns.dtype == np.int32
    assert ((ell.columns >= 0) & (ell.columns < k)).all()
    # a row's length: the columns of its stored blocks (a 1 x c block's zeros are stored too)
    stored = np.zeros((n, -(-k // c) * c), bool)
    for i in range(n):
        for b in range(bw.indptr[i], bw.indptr[i + 1]):
            stored[i, bw.indices[b] * c : bw.indices[b] * c + c] = True
    counts = stored[:, :k].sum(axis=1)
    window = max(lanes, window_slices * lanes)
    for s in range(ell.slices):  # a slice is as long as its longest row
        rows = ell.rows[s * lanes : (s + 1) * lanes]
        rows = rows[rows < n]
        assert ell.slice_ptr[s + 1] - ell.slice_ptr[s] == counts[rows].max()
        assert (rows // window == s * lanes // window).all()  # rows stay in their window


def test_sorting_within_windows_cuts_the_padding():
    rng = np.random.default_rng(0)
    w = random_weight(rng, 3072, 768, 0.9, [])
    w[::3, : 768 // 2] = 0  # rows of two lengths interleaved
    bw = BlockSparseWeight.from_dense(w, (1, 1))
    stored = [sliced_ell(bw, 16, window).values.size / bw.nnz_blocks for window in (16, 256)]
    assert stored[0] > 1.2  # the weight's own row order: slices mix long and short rows
    assert stored[1] < 1.05


def test_rejects_blocks_of_several_rows():
    bw = BlockSparseWeight.from_dense(np.ones((8, 8), np.float32), (4, 1))
    with pytest.raises(ValueError, match="one row"):
        sliced_ell(bw, 16, 256)
