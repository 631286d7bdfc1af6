"""BlockSparseWeight: round trip, layout of ``data``, sizes, zero-block fraction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight, zero_block_fraction

BLOCKS = [(1, 1), (4, 1), (8, 1), (16, 1), (1, 4), (2, 3)]


def random_block_sparse(rng, n, k, block, density):
    r, c = block
    keep = rng.random((-(-n // r), -(-k // c))) < density
    mask = np.repeat(np.repeat(keep, r, axis=0), c, axis=1)[:n, :k]
    return (rng.standard_normal((n, k)) * mask).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 40),
    block=st.sampled_from(BLOCKS),
    density=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
    seed=st.integers(0, 2**16),
)
def test_round_trip_and_shapes(n, k, block, density, seed):
    w = random_block_sparse(np.random.default_rng(seed), n, k, block, density)
    bw = BlockSparseWeight.from_dense(w, block)
    r, c = block
    np.testing.assert_array_equal(bw.to_dense(), w)
    assert bw.to_dense().dtype == np.float32
    assert bw.shape == (n, k) and bw.block == block
    assert bw.indptr.shape == (-(-n // r) + 1,)
    assert bw.indptr.dtype == np.int32 and bw.indices.dtype == np.int32
    assert bw.data.dtype == np.float32
    assert bw.data.shape == (max(bw.nnz_blocks, 1), c, r)
    assert bw.indices.shape == (max(bw.nnz_blocks, 1),)
    assert bw.nnz_blocks == round(
        (1 - zero_block_fraction(w, block)) * len(bw.indptr[:-1]) * -(-k // c)
    )


def test_data_layout_is_transposed_blocks():
    w = np.zeros((4, 6), np.float32)
    w[0:2, 3:6] = [[1, 2, 3], [4, 5, 6]]
    bw = BlockSparseWeight.from_dense(w, (2, 3))
    assert bw.nnz_blocks == 1
    np.testing.assert_array_equal(bw.indices, [1])
    np.testing.assert_array_equal(bw.indptr, [0, 1, 1])
    # data[b, j, i] = W[br * r + i, indices[b] * c + j]
    np.testing.assert_array_equal(bw.data[0], [[1, 4], [2, 5], [3, 6]])


def test_all_zero_matrix_keeps_a_placeholder_block():
    bw = BlockSparseWeight.from_dense(np.zeros((5, 7), np.float32), (4, 1))
    assert bw.nnz_blocks == 0
    assert bw.data.shape == (1, 1, 4) and not bw.data.any()
    np.testing.assert_array_equal(bw.indptr, [0, 0, 0])
    np.testing.assert_array_equal(bw.to_dense(), np.zeros((5, 7), np.float32))


def test_sizes():
    w = np.eye(16, 32, dtype=np.float32)
    bw = BlockSparseWeight.from_dense(w, (16, 1))
    assert bw.nnz_blocks == 16
    assert bw.nbytes == 16 * 16 * 4 + 16 * 4 + 2 * 4
    assert bw.dense_nbytes == 16 * 32 * 4


def test_kept_block_stores_explicit_zeros():
    w = np.zeros((4, 1), np.float32)
    w[2, 0] = 3.0
    bw = BlockSparseWeight.from_dense(w, (4, 1))
    np.testing.assert_array_equal(bw.data, [[[0, 0, 3, 0]]])


@pytest.mark.parametrize(
    ("block", "expected"),
    [((1, 1), 1 - 3 / 15), ((2, 2), 1 - 2 / 6), ((3, 5), 0.0), ((4, 4), 1 - 2 / 2)],
)
def test_zero_block_fraction_counts_ragged_edges(block, expected):
    w = np.zeros((3, 5), np.float32)
    w[0, 0] = 1
    w[2, 4] = 2
    w[1, 1] = 3
    assert zero_block_fraction(w, block) == pytest.approx(expected)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        BlockSparseWeight.from_dense(np.zeros((2, 2, 2)), (1, 1))
    with pytest.raises(ValueError):
        BlockSparseWeight.from_dense(np.zeros((2, 2)), (0, 1))
