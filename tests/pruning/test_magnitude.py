import numpy as np
import pytest

from sparse_tvm.examples import mlp, small_cnn
from sparse_tvm.frontend.initializers import read_initializer
from sparse_tvm.pruning import block_mask, prunable_weights, prune_magnitude


@pytest.mark.parametrize("block", [(1, 1), (4, 1), (16, 1), (1, 4)])
@pytest.mark.parametrize("shape", [(64, 48), (37, 29)])
def test_block_mask_zeros_whole_blocks(block, shape):
    w = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    mask = block_mask(w, 0.8, block)
    r, c = block
    n, k = shape
    # -1 marks the padding past the matrix edge
    padded = -np.ones((-(-n // r) * r, -(-k // c) * c), int)
    padded[:n, :k] = mask
    blocks = padded.reshape(padded.shape[0] // r, r, padded.shape[1] // c, c).swapaxes(1, 2)
    blocks = blocks.reshape(blocks.shape[0], blocks.shape[1], -1)
    kept = (blocks == 1).any(axis=2)
    dropped = (blocks == 0).any(axis=2)
    assert not np.any(kept & dropped), "a block is partly kept"
    assert abs((1 - kept.mean()) - 0.8) <= 1.0 / kept.size + 1e-9


def test_prune_model_orientation_and_exclude():
    model = mlp()
    pruned = prune_magnitude(model, 0.9, "16x1", exclude=["fc3.weight"])
    weights = {w.name: w for w in prunable_weights(pruned)}
    fc1 = weights["fc1.weight"].to_nk(read_initializer(pruned, "fc1.weight"))
    assert fc1.shape == (256, 64)
    assert np.mean(fc1 == 0) == pytest.approx(0.9, abs=0.01)
    # 16 consecutive output features share their zeros
    assert np.all(
        (fc1.reshape(16, 16, 64) == 0).all(axis=1) == (fc1.reshape(16, 16, 64) == 0)[:, 0]
    )
    assert np.count_nonzero(read_initializer(pruned, "fc3.weight") == 0) == 0


def test_prune_conv_weights():
    pruned = prune_magnitude(small_cnn(), 0.5, "1x1")
    w = read_initializer(pruned, "conv3.weight")
    assert w.shape == (64, 32, 3, 3)
    assert np.mean(w == 0) == pytest.approx(0.5, abs=0.01)


def test_prune_api_reports_sparsity_and_fine_tuning_needs_data():
    import sparse_tvm as st

    result = st.prune(mlp(), 0.8, "4x1", exclude=["fc3.weight"])
    assert result.report["fc1.weight"] == pytest.approx(0.8, abs=0.01)
    assert result.report["fc3.weight"] == 0.0
    with pytest.raises(st.SparseTVMError, match="needs data"):
        st.prune(mlp(), 0.8, method="gmp")
