"""The sliced ELLPACK matrix-vector kernel against numpy: shapes off the lane grid, empty
rows, empty weights, 1x1 and 1x4 blocks, bias and ReLU, batch rows, AVX-512 and AVX2 lanes, X
gathered element by element or (AVX-512) by permutes from chunks of 32 columns."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels import spmm_unrolled
from sparse_tvm.kernels.spmm import kernel_knobs, spmm_arrays, spmm_kernel
from sparse_tvm.target.machine import vector_lanes
from tests.conftest import avx512
from tests.formats.test_sliced_ell import random_weight

from .test_spmm import AVX2, TARGET, run_spmm


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 90),
    k=st.integers(1, 70),
    sparsity=st.sampled_from([0.0, 0.7, 0.95, 1.0]),
    c=st.sampled_from([1, 1, 4]),
    layout_batch=st.sampled_from([("MK", 1), ("KM", 1), ("KM", 3)]),
    bias=st.booleans(),
    relu=st.booleans(),
    avx2=st.booleans(),
    window=st.sampled_from([None, 1, 48]),
    chunk=st.sampled_from([None, 0, 32]),
    seed=st.integers(0, 2**16),
)
def test_sliced_kernel_matches_numpy(
    n, k, sparsity, c, layout_batch, bias, relu, avx2, window, chunk, seed
):
    layout, batch = layout_batch
    target = AVX2 if avx2 else TARGET
    w = random_weight(np.random.default_rng(seed), n, k, sparsity, empty_rows=range(0, n, 5))
    bw = BlockSparseWeight.from_dense(w, (1, c))
    knobs = {} if window is None else {"window": window}
    if chunk is not None and vector_lanes(target) == 16:  # chunks of 32 columns: AVX-512 only
        knobs["chunk"] = chunk
    knobs = knobs or None
    with pytest.MonkeyPatch.context() as patch:  # small weights would get the unrolled kernel
        patch.setattr(spmm_unrolled, "MAX_UNROLLED_TERMS", -1)
        strategy, _ = kernel_knobs(bw, 1, x_layout=layout, batch=batch, target=target)
        assert strategy == "sliced"
        got, ref = run_spmm(
            w, (1, c), 1, layout=layout, batch=batch, bias=bias, relu=relu, target=target,
            seed=seed, kernel=partial(spmm_kernel, knobs=knobs),
            arrays=partial(spmm_arrays, knobs=knobs),
        )  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@avx512  # the AVX-512 default: chunks of 32 columns
@pytest.mark.parametrize("chunk", [0, 32])
def test_bert_ffn_weight_at_90_percent(chunk):
    """A weight too big to unroll takes the sliced kernel by default, its columns in chunks of
    32 on AVX-512 (gathered by permutes) and element by element on AVX2."""
    w = random_weight(np.random.default_rng(3), 3072, 768, 0.9, empty_rows=range(0, 3072, 50))
    bw = BlockSparseWeight.from_dense(w, (1, 1))
    strategy, knobs = kernel_knobs(bw, 1, target=TARGET)
    assert strategy == "sliced" and knobs.chunk == 32
    assert kernel_knobs(bw, 1, target=AVX2)[1].chunk == 0
    with pytest.raises(ValueError, match="AVX-512"):
        kernel_knobs(bw, 1, target=AVX2, knobs={"chunk": 32})
    got, ref = run_spmm(
        w, (1, 1), 1, bias=True, relu=True,
        kernel=partial(spmm_kernel, knobs={"chunk": chunk}),
        arrays=partial(spmm_arrays, knobs={"chunk": chunk}),
    )  # fmt: skip
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
