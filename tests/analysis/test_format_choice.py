import numpy as np
import pytest

from sparse_tvm.analysis import block_zero_fractions, choose_format
from sparse_tvm.pruning import block_mask


def _pruned(n, k, sparsity, block, seed=0):
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
    return np.where(block_mask(w, sparsity, block), w, 0).astype(np.float32)


def test_block_zero_fractions_of_a_block_pruned_weight():
    w = _pruned(64, 48, 0.75, (16, 1))
    fractions = block_zero_fractions(w)
    assert fractions["16x1"] == pytest.approx(0.75)
    assert fractions["4x1"] == pytest.approx(0.75)  # 16x1 zeros are 4x1 zeros too
    assert fractions["1x1"] == pytest.approx(0.75)
    assert fractions["1x4"] < 0.75  # columns do not line up with 1x4 blocks


def test_dense_weight_stays_dense():
    w = np.random.default_rng(0).standard_normal((128, 128)).astype(np.float32)
    assert choose_format(w, 128).format == "dense"


def test_block_sparse_weight_gets_its_block():
    choice = choose_format(_pruned(256, 256, 0.9, (16, 1)), 128)
    assert (choice.format, choice.block) == ("bsr", (16, 1))


def test_unstructured_weight_gets_csr():
    choice = choose_format(_pruned(256, 256, 0.9, (1, 1)), 128)
    assert (choice.format, choice.block) == ("csr", (1, 1))


def test_threshold_keeps_a_layer_dense():
    choice = choose_format(_pruned(256, 256, 0.9, (1, 1)), 128, sparsity_threshold=0.95)
    assert choice.format == "dense" and "threshold" in choice.reason
