"""Chunked sliced ELLPACK order: the same nonzeros, each step within one chunk of columns, a
slice's steps chunk by chunk, as long as its longest row's count in each chunk."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.formats.chunked_ell import chunked_ell, chunked_steps
from tests.formats.test_sliced_ell import random_weight


def rebuilt(ell, n, k, lanes) -> np.ndarray:
    """The dense weight the chunked arrays describe."""
    out = np.zeros((n, -(-k // ell.chunk) * ell.chunk), np.float32)
    for s in range(len(ell.slice_ptr) - 1):
        for t in range(ell.slice_ptr[s], ell.slice_ptr[s + 1]):
            for lane in range(lanes):
                if s * lanes + lane < n:
                    column = ell.step_chunk[t] * ell.chunk + ell.offsets[t, lane]
                    out[ell.rows[s * lanes + lane], column] += ell.values[t, lane]
    return out


@settings(max_examples=50, deadline=None)
@given(
    n=st.integers(1, 70),
    k=st.integers(1, 100),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    c=st.sampled_from([1, 1, 4]),
    lanes=st.sampled_from([4, 16]),
    chunk=st.sampled_from([8, 32]),
    window_slices=st.integers(0, 4),
    seed=st.integers(0, 2**16),
)
def test_chunked_order_keeps_every_nonzero(n, k, sparsity, c, lanes, chunk, window_slices, seed):
    rng = np.random.default_rng(seed)
    w = random_weight(rng, n, k, sparsity, range(0, n, 5))
    bw = BlockSparseWeight.from_dense(w, (1, c))
    window = window_slices * lanes
    ell = chunked_ell(bw, lanes, window, chunk)
    got = rebuilt(ell, n, k, lanes)
    np.testing.assert_array_equal(got[:, :k], w)
    assert not got[:, k:].any()  # nothing past k
    assert chunked_steps(bw, lanes, window, chunk) == ell.steps  # the kernel's spec
    assert ell.values.dtype == np.float32 and ell.offsets.dtype == np.uint8
    assert (ell.offsets < chunk).all()
    assert sorted(ell.rows[:n]) == list(range(n)) and (ell.rows[n:] == n).all()
    # a slice's steps go chunk by chunk, each chunk as long as its rows' longest part in it
    chunks = -(-k // chunk)
    stored = np.zeros((n, chunks * chunk), bool)
    for i in range(n):
        for b in range(bw.indptr[i], bw.indptr[i + 1]):
            stored[i, bw.indices[b] * c : bw.indices[b] * c + c] = True
    stored[:, k:] = False  # a 1 x c block's columns past k are dropped
    per_chunk = stored.reshape(n, chunks, chunk).sum(axis=2)
    for s in range(len(ell.slice_ptr) - 1):
        rows = ell.rows[s * lanes : (s + 1) * lanes]
        rows = rows[rows < n]
        steps = ell.step_chunk[ell.slice_ptr[s] : ell.slice_ptr[s + 1]]
        assert (np.diff(steps) >= 0).all()
        assert (np.bincount(steps, minlength=chunks) == per_chunk[rows].max(axis=0)).all()


def test_refuses_what_one_byte_offsets_cannot_hold():
    bw = BlockSparseWeight.from_dense(np.ones((8, 8), np.float32), (4, 1))
    with pytest.raises(ValueError, match="one row"):
        chunked_ell(bw, 16, 16, 32)
    bw = BlockSparseWeight.from_dense(np.ones((8, 8), np.float32), (1, 1))
    with pytest.raises(ValueError, match="1 to 256"):
        chunked_ell(bw, 16, 16, 512)
