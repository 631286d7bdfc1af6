"""K-panelled order of block-sparse arrays: the same blocks, regrouped by (panel, block row)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.formats.panels import panel_count, panel_order


def rebuilt(weight: BlockSparseWeight, data, indices, indptr, panel: int) -> np.ndarray:
    """The dense weight the panelled arrays describe, checking each block's panel and order."""
    r, c = weight.block
    n, k = weight.shape
    nbr = weight.indptr.shape[0] - 1
    panels = (indptr.shape[0] - 1) // nbr
    out = np.zeros((nbr * r, -(-k // c) * c), np.float32)
    for q in range(panels):
        for br in range(nbr):
            cols = indices[indptr[q * nbr + br] : indptr[q * nbr + br + 1]]
            assert list(cols) == sorted(cols)
            assert panels == 1 or all(col // panel == q for col in cols)
            for b in range(indptr[q * nbr + br], indptr[q * nbr + br + 1]):
                col = indices[b]
                out[br * r : br * r + r, col * c : col * c + c] = data[b].T
    return out[:n, :k]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 40),
    block=st.sampled_from([(1, 1), (4, 1), (1, 4), (2, 3)]),
    sparsity=st.sampled_from([0.0, 0.5, 0.95, 1.0]),
    panel=st.integers(0, 9),
    seed=st.integers(0, 2**16),
)
def test_panel_order_keeps_every_block(n, k, block, sparsity, panel, seed):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * (rng.random((n, k)) >= sparsity)).astype(np.float32)
    weight = BlockSparseWeight.from_dense(w, block)
    data, indices, indptr = panel_order(weight, panel)
    panels = panel_count(-(-k // block[1]), panel)
    assert indptr.shape == (panels * (weight.indptr.shape[0] - 1) + 1,)
    assert indptr[-1] == weight.nnz_blocks and data.shape == weight.data.shape
    np.testing.assert_array_equal(rebuilt(weight, data, indices, indptr, panel), w)


def test_one_panel_is_the_weights_own_order():
    weight = BlockSparseWeight.from_dense(np.eye(8, dtype=np.float32), (1, 1))
    for panel in (0, 8, 100):
        data, indices, indptr = panel_order(weight, panel)
        assert data is weight.data and indices is weight.indices and indptr is weight.indptr
    assert panel_count(8, 3) == 3 and panel_count(8, 0) == 1 and panel_count(9, 3) == 3
