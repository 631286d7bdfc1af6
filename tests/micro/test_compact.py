import numpy as np
import pytest

from sparse_tvm.micro.compact import compact_weight, smallest_compact


def _sparse(shape, density, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) > density] = 0
    return w


@pytest.mark.parametrize("block", [(1, 1), (2, 1), (4, 1)])
def test_delta8_bridges_long_gaps_exactly(block):
    w = _sparse((10, 2000), 0.002)  # gaps far beyond 255 columns
    w[3, 1999] = 1.5  # the last column
    cw = compact_weight(w, block)
    assert cw.to_dense().tolist() == w.tolist()
    if cw.encoding == "delta8":
        assert cw.indices.dtype == np.uint8


def test_int16_indices_when_deltas_would_need_fillers():
    w = np.zeros((4, 5000), np.float32)
    w[:, [0, 4000, 4999]] = 1.0  # two gaps of ~1000: 4 fillers each in delta8
    cw = compact_weight(w, (1, 1))
    assert cw.encoding == "int16" and cw.indices.dtype == np.int16
    assert cw.indptr.dtype == np.uint16
    assert np.array_equal(cw.to_dense(), w)


def test_smallest_encoding_at_90_percent_is_a_ninth_of_dense():
    w = _sparse((256, 256), 0.1)
    cw = smallest_compact(w)
    # 4 bytes of value + 1 byte of delta per nonzero, plus 2 bytes of indptr per row
    assert cw.label == "csr 1x1 delta8"
    assert cw.nbytes == np.count_nonzero(w) * 5 + 257 * 2
    assert np.array_equal(cw.to_dense(), w)


def test_block_pattern_picks_blocks():
    rng = np.random.default_rng(1)
    mask = rng.random((64, 128)) < 0.1
    w = np.repeat(mask, 4, axis=0) * rng.standard_normal((256, 128)).astype(np.float32)
    cw = smallest_compact(w)
    assert cw.r == 4 and np.array_equal(cw.to_dense(), w)


def test_empty_matrix_keeps_non_empty_arrays():
    cw = compact_weight(np.zeros((8, 8), np.float32), (4, 1))
    assert cw.nnz_blocks == 0 and cw.data.size == 4 and cw.indices.size == 1
    assert not cw.to_dense().any()
