"""The fully unrolled SpMM of small layers against numpy: random structures, empty rows,
every block shape, both layouts, thread parts balanced by nonzeros."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels.spmm import spmm_spec, wrap_kernel
from sparse_tvm.kernels.spmm_unrolled import (
    UnrolledKnobs,
    balanced_chunks,
    unroll_eligible,
    unrolled_body,
)
from tests.kernels.test_spmm import BLOCKS, TARGET, random_block_sparse, run_spmm


def unrolled_kernel(parts):
    def make(bw, m, *, target, **layer):
        spec = spmm_spec(bw, m, target=target, **layer)
        assert unroll_eligible(spec)
        return wrap_kernel(spec, unrolled_body(spec, UnrolledKnobs(parts=parts)))

    return make


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 40),
    k=st.integers(1, 40),
    m=st.integers(1, 20),
    block=st.sampled_from(BLOCKS),
    sparsity=st.sampled_from([0.0, 0.5, 0.9, 1.0]),
    layout=st.sampled_from(["MK", "KM"]),
    parts=st.sampled_from([1, 2, 3]),
    fuse=st.sampled_from([(False, False), (True, True)]),
    seed=st.integers(0, 2**16),
)
def test_unrolled_random(n, k, m, block, sparsity, layout, parts, fuse, seed):
    m = min(m, 8) if layout == "MK" else m  # row-major X: small row counts only
    w = random_block_sparse(np.random.default_rng(seed), n, k, block, sparsity)
    w[:: max(1, n // 3)] = 0  # empty rows
    y, ref = run_spmm(
        w,
        block,
        m,
        layout=layout,
        batch=2 if layout == "KM" else 1,
        bias=fuse[0],
        relu=fuse[1],
        seed=seed,
        kernel=unrolled_kernel(parts),
    )
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_indices_are_immediates():
    # straight-line code: no loop reads indices or indptr, X offsets are constants
    w = random_block_sparse(np.random.default_rng(0), 12, 30, (1, 1), 0.8)
    spec = spmm_spec(BlockSparseWeight.from_dense(w, (1, 1)), 1, target=TARGET)
    script = wrap_kernel(spec, unrolled_body(spec)).script()
    assert "indices[" not in script and "indptr[" not in script
    col = int(np.flatnonzero(w[0])[0])
    assert f"Xf[{col}]" in script


def test_large_layers_are_not_eligible():
    w = random_block_sparse(np.random.default_rng(0), 256, 256, (1, 1), 0.5)
    spec = spmm_spec(BlockSparseWeight.from_dense(w, (1, 1)), 1, target=TARGET)
    assert spec.structure is None and not unroll_eligible(spec)
    with pytest.raises(ValueError, match="small layer"):
        unrolled_body(spec)


def test_parts_balance_nonzeros():
    indptr = np.array([0, 10, 10, 11, 12, 13, 20, 20])  # 7 rows, 20 nonzeros
    chunks = balanced_chunks(indptr, 2)
    assert [list(c) for c in chunks] == [[0], [1, 2, 3, 4, 5, 6]]  # 10 + 10 nonzeros
    equal = balanced_chunks(np.arange(0, 17, 2), 4)  # 8 rows of 2
    assert [list(c) for c in equal] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sum(len(c) for c in balanced_chunks(indptr, 5)) == 7
    assert len(balanced_chunks(indptr[:3], 8)) == 2  # never more parts than block rows
