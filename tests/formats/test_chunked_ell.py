"""Windowed sliced ELLPACK order: the same nonzeros, each step inside one window of ``chunk``
columns starting at the first column the slice has left (rounded down to ``align``), no step
without a nonzero."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.formats.chunked_ell import chunked_ell, chunked_steps, window_columns
from tests.formats.test_sliced_ell import random_weight


def rebuilt(ell, n, k, lanes, align) -> np.ndarray:
    """The dense weight the windowed arrays describe, as wide as the windows reach."""
    out = np.zeros((n, window_columns(k, ell.chunk, align)), np.float32)
    for s in range(len(ell.slice_ptr) - 1):
        for t in range(ell.slice_ptr[s], ell.slice_ptr[s + 1]):
            for lane in range(lanes):
                if s * lanes + lane < n:
                    column = ell.step_start[t] + ell.offsets[t, lane]
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
    align=st.sampled_from([1, 8]),
    seed=st.integers(0, 2**16),
)
def test_windowed_order_keeps_every_nonzero(
    n, k, sparsity, c, lanes, chunk, window_slices, align, seed
):
    rng = np.random.default_rng(seed)
    w = random_weight(rng, n, k, sparsity, range(0, n, 5))
    bw = BlockSparseWeight.from_dense(w, (1, c))
    window = window_slices * lanes
    ell = chunked_ell(bw, lanes, window, chunk, align)
    got = rebuilt(ell, n, k, lanes, align)
    np.testing.assert_array_equal(got[:, :k], w)
    assert not got[:, k:].any()  # nothing past k
    assert chunked_steps(bw, lanes, window, chunk, align) == ell.steps  # the kernel's spec
    assert ell.values.dtype == np.float32 and ell.offsets.dtype == np.uint8
    assert (ell.offsets < chunk).all()
    assert (ell.step_start % align == 0).all() and (ell.step_start >= 0).all()
    assert sorted(ell.rows[:n]) == list(range(n)) and (ell.rows[n:] == n).all()
    # mark the stored elements (the weight's own values may be zero inside a 1 x 4 block)
    ones = dataclasses.replace(bw, data=np.ones_like(bw.data))
    marked = chunked_ell(ones, lanes, window, chunk, align)
    stored = marked.values != 0
    for s in range(len(ell.slice_ptr) - 1):
        steps = slice(ell.slice_ptr[s], ell.slice_ptr[s + 1])
        starts = ell.step_start[steps]
        assert (np.diff(starts) >= 0).all()  # windows left to right
        lanes_stored = stored[steps]
        assert lanes_stored.any(axis=1).all()  # no step is padding only
        # a window starts at the step's first column (the first column the slice has left)
        columns = starts[:, None] + marked.offsets[steps].astype(np.int64)
        first = np.where(lanes_stored, columns, k).min(axis=1)
        assert (starts == first // align * align).all()


@pytest.mark.parametrize("align, most", [(1, 1.5), (8, 1.6)])
def test_sliding_windows_pad_less_than_fixed_chunks(align, most):
    """A 90 % unstructured BERT-size weight in slices of 16 rows: each step holds about two
    thirds of a slice's rows on average (fixed 32-column chunks: half)."""
    rng = np.random.default_rng(0)
    w = random_weight(rng, 512, 768, 0.9, [])
    ell = chunked_ell(BlockSparseWeight.from_dense(w, (1, 1)), 16, 16, 32, align)
    padding = ell.steps * 16 / np.count_nonzero(w)
    assert 1.0 < padding < most, padding


def test_refuses_what_one_byte_offsets_cannot_hold():
    bw = BlockSparseWeight.from_dense(np.ones((8, 8), np.float32), (4, 1))
    with pytest.raises(ValueError, match="one row"):
        chunked_ell(bw, 16, 16, 32)
    bw = BlockSparseWeight.from_dense(np.ones((8, 8), np.float32), (1, 1))
    with pytest.raises(ValueError, match="1 to 256"):
        chunked_ell(bw, 16, 16, 512)
    with pytest.raises(ValueError, match="aligned"):
        chunked_ell(bw, 16, 16, 32, 64)
