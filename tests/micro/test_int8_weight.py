"""The int8 weight layouts of the Cortex-M kernels hold the weight exactly, in the bytes
``SXTB16`` reads as the pairs ``SMLAD`` multiplies."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_

from sparse_tvm.micro.int8_weight import dense_int8, smallest_int8, sparse_int8


def _weight(rng, n, k, density, block=(1, 1)):
    r, c = block
    mask = rng.random((-(-n // r), -(-k // c))) < density
    mask = np.repeat(np.repeat(mask, r, 0), c, 1)[:n, :k]
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)
    return np.where(mask, w, 0).astype(np.int8)


def _sxtb16_pairs(word: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """What SXTB16 and SXTB16 ROR #8 extract from a word: (bytes 0, 2), (bytes 1, 3)."""
    b = np.array([word], np.int32).view(np.int8)
    return (int(b[0]), int(b[2])), (int(b[1]), int(b[3]))


@settings(max_examples=40, deadline=None)
@given(
    n=st_.integers(1, 40),
    k=st_.integers(1, 300),
    density=st_.sampled_from([0.0, 0.05, 0.3, 1.0]),
    r=st_.sampled_from([1, 2, 4, 8]),
    seed=st_.integers(0, 2**16),
)
def test_sparse_layout_holds_the_weight(n, k, density, r, seed):
    w = _weight(np.random.default_rng(seed), n, k, density, (r, 1))
    packed = sparse_int8(w, r)
    np.testing.assert_array_equal(packed.to_dense(), w)
    np.testing.assert_array_equal(packed.row_sums, w.astype(np.int64).sum(1))
    assert packed.indptr[-1] * packed.group * r // 4 == packed.data.size or packed.indptr[-1] == 0
    assert packed.nbytes == packed.data.nbytes + packed.indices.nbytes + packed.indptr.nbytes


@settings(max_examples=30, deadline=None)
@given(n=st_.integers(1, 33), k=st_.integers(1, 70), seed=st_.integers(0, 2**16))
def test_dense_layout_pairs_what_smlad_multiplies(n, k, seed):
    w = _weight(np.random.default_rng(seed), n, k, 0.7)
    packed = dense_int8(w)
    np.testing.assert_array_equal(packed.to_dense(), w)
    words = -(-k // 4)
    assert packed.data.size == (n + n % 2) * words
    padded = np.zeros((n, words * 4), np.int8)
    padded[:, :k] = w
    for row in range(n):
        for j in range(words):
            low, high = _sxtb16_pairs(int(packed.data[row * words + j]))
            assert low == tuple(padded[row, 4 * j : 4 * j + 2])  # times x[4j], x[4j + 1]
            assert high == tuple(padded[row, 4 * j + 2 : 4 * j + 4])


def test_block_pair_words_hold_two_rows_of_two_blocks():
    w = np.zeros((4, 600), np.int8)
    w[0:4, 3] = [1, 2, 3, 4]
    w[0:4, 520] = [5, 6, 7, 8]
    packed = sparse_int8(w, 4)
    # delta8 would need a zero block to bridge the gap over 255 and one to pad: int16 is smaller
    assert packed.encoding == "int16" and list(packed.indices) == [3, 520]
    np.testing.assert_array_equal(packed.to_dense(), w)
    rows01, rows23 = (_sxtb16_pairs(int(word)) for word in packed.data)
    assert rows01 == ((1, 5), (2, 6)) and rows23 == ((3, 7), (4, 8))  # (block 0, block 1)
    w[0:4, 300] = [1, 1, 1, 1]  # now 3 blocks, gaps 297 and 220: delta8 with one bridge
    packed = sparse_int8(w, 4)
    assert packed.encoding == "delta8" and list(packed.indices) == [3, 255, 42, 220]
    np.testing.assert_array_equal(packed.to_dense(), w)


def test_inputs_up_to_256_store_columns_not_deltas():
    """k <= 256: 8-bit columns, as small as deltas (no gap to bridge) and read by one load."""
    w = np.zeros((4, 256), np.int8)
    w[0:4, [3, 200, 255]] = 7
    packed = sparse_int8(w, 4)
    assert packed.encoding == "col8" and packed.indices.dtype == np.uint8
    assert list(packed.indices) == [3, 200, 255, 255]  # padded to whole words at the last
    assert packed.label == "int8 bsr 4x1 col8"
    np.testing.assert_array_equal(packed.to_dense(), w)
    assert sparse_int8(np.zeros((4, 257), np.int8), 4).encoding != "col8"


def test_smallest_prefers_dense_for_a_dense_weight_and_blocks_for_a_sparse_one():
    rng = np.random.default_rng(0)
    dense = _weight(rng, 64, 64, 1.0)
    assert smallest_int8(dense).dense
    sparse = _weight(rng, 64, 256, 0.1, (4, 1))
    best = smallest_int8(sparse)
    assert not best.dense and best.r == 4
    assert best.nbytes < 0.2 * dense_int8(sparse).nbytes


def test_rejects_a_float_weight():
    with pytest.raises(ValueError, match="int8"):
        dense_int8(np.zeros((4, 4), np.float32))
