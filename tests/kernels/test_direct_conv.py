"""The direct sparse conv: padded flat input -> "DIRECT" SpMM -> crop, against a numpy conv, on
random geometries (kernel sizes, asymmetric padding, rows narrower than a vector, empty rows)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels import spmm_kernel
from sparse_tvm.kernels.direct_conv import DirectConv, crop_kernel, pad_flat_kernel
from sparse_tvm.kernels.spmm import spmm_spec
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)
AVX2 = tvm.target.Target({"kind": "llvm", "mcpu": "haswell", "num-cores": 2})


def _reference(x: np.ndarray, w: np.ndarray, b: np.ndarray, padding, relu: bool) -> np.ndarray:
    top, left, bottom, right = padding
    p = np.pad(x[0], ((0, 0), (top, bottom), (left, right)))
    n, c, kh, kw = w.shape
    oh, ow = p.shape[1] - kh + 1, p.shape[2] - kw + 1
    out = np.zeros((n, oh, ow), np.float64)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nc,chw->nhw", w[:, :, i, j], p[:, i : i + oh, j : j + ow])
    out += b[:, None, None]
    return (np.maximum(out, 0) if relu else out)[None].astype(np.float32)


def _run(x, w, b, padding, block, relu, target=TARGET) -> np.ndarray:
    n, c, kh, kw = w.shape
    geometry = DirectConv(c, x.shape[2], x.shape[3], (kh, kw), tuple(padding))
    weight = BlockSparseWeight.from_dense(w.reshape(n, -1), block)
    funcs = [
        pad_flat_kernel(geometry),
        spmm_kernel(
            weight, geometry.m, x_layout="DIRECT", bias=True, relu=relu, target=target,
            x_size=geometry.x_size,
        ),
        crop_kernel(n, geometry),
    ]  # fmt: skip
    built = [tvm.compile(f.with_attr("global_symbol", "main"), target).jit() for f in funcs]
    dev = tvm.cpu()
    flat = tvm.runtime.tensor(np.full(geometry.x_size, np.nan, np.float32), dev)
    built[0]["main"](tvm.runtime.tensor(x, dev), flat)
    grid = tvm.runtime.tensor(np.full((1, n, geometry.m), np.nan, np.float32), dev)
    offsets = geometry.offsets(weight.indices)
    args = [weight.data, offsets, weight.indptr, b]
    built[1]["main"](flat, *(tvm.runtime.tensor(a, dev) for a in args), grid)
    out = tvm.runtime.tensor(np.zeros((1, n, *geometry.out_hw), np.float32), dev)
    built[2]["main"](grid, out)
    return out.numpy()


def _weight(rng, n, c, kh, kw, block, sparsity, empty_rows=()):
    r, cb = block
    k = c * kh * kw
    keep = rng.random((-(-n // r), -(-k // cb))) >= sparsity
    mask = np.repeat(np.repeat(keep, r, 0), cb, 1)[:n, :k]
    w = (rng.standard_normal((n, k)) * mask).astype(np.float32)
    w[list(empty_rows)] = 0
    return w.reshape(n, c, kh, kw)


@settings(max_examples=10, deadline=None)
@given(
    c=st.integers(1, 6),
    n=st.integers(1, 9),
    h=st.integers(1, 9),
    width=st.integers(1, 21),
    kh=st.integers(1, 3),
    kw=st.integers(1, 3),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    r=st.sampled_from([1, 4]),
    sparsity=st.sampled_from([0.0, 0.6, 0.95]),
    relu=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_direct_conv_matches_numpy(c, n, h, width, kh, kw, padding, r, sparsity, relu, seed):
    top, left, bottom, right = padding
    if h + top + bottom < kh or width + left + right < kw:
        return  # no output
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, h, width)).astype(np.float32)
    w = _weight(rng, n, c, kh, kw, (r, 1), sparsity, empty_rows=[0] if n > 1 else [])
    b = rng.standard_normal(n).astype(np.float32)
    got = _run(x, w, b, padding, (r, 1), relu)
    np.testing.assert_allclose(got, _reference(x, w, b, padding, relu), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", [TARGET, AVX2], ids=["avx512", "avx2"])
def test_a_resnet_3x3_layer(target):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)
    w = _weight(rng, 64, 64, 3, 3, (4, 1), 0.9)
    b = rng.standard_normal(64).astype(np.float32)
    got = _run(x, w, b, (1, 1, 1, 1), (4, 1), True, target)
    np.testing.assert_allclose(got, _reference(x, w, b, (1, 1, 1, 1), True), rtol=1e-4, atol=1e-4)


def test_offsets_address_each_tap_of_the_padded_input():
    g = DirectConv(2, 4, 5, (3, 3), (1, 1, 1, 1))
    assert (g.hp, g.wp, g.out_hw, g.m) == (6, 7, (4, 5), 28)
    # column (c, i, j) = (c * 3 + i) * 3 + j
    assert g.offsets(np.array([0, 1, 3, 9, 17])).tolist() == [0, 1, 7, 42, 42 + 2 * 7 + 2]
    assert g.x_size == 2 * 6 * 7 + 3


def test_direct_layout_takes_column_blocks_and_an_input_size():
    weight = BlockSparseWeight.from_dense(np.eye(8, dtype=np.float32), (1, 4))
    with pytest.raises(ValueError, match="r x 1 blocks"):
        spmm_spec(weight, 16, x_layout="DIRECT", x_size=100)
    weight = BlockSparseWeight.from_dense(np.eye(8, dtype=np.float32), (4, 1))
    with pytest.raises(ValueError, match="x_size"):
        spmm_spec(weight, 16, x_layout="DIRECT")
