"""The fused attention kernel against numpy: every query / key / value / output layout, masks of
every broadcast shape, sizes off the vector and tile grids (one query, one key, odd head
dimensions), blocks of rows that end short, AVX-512 and AVX2 lanes; and its exp, bit for bit
TOPI's ``fast_exp``."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st
from tvm import te, topi

from sparse_tvm.kernels.attention import (
    AttentionKnobs,
    AttentionSpec,
    attention_kernel,
    default_attention_knobs,
)
from sparse_tvm.kernels.fast_exp import fast_exp

from .test_spmm import AVX2, TARGET


def _to_layout(x_bhsd: np.ndarray, layout: str) -> np.ndarray:
    """A ``(B, H, S, D)`` array in ``layout`` (``BHDS``: the last two axes swapped)."""
    if layout == "BHDS":
        return np.ascontiguousarray(x_bhsd.transpose(0, 1, 3, 2))
    return np.ascontiguousarray(x_bhsd.transpose(["BHSD".index(a) for a in layout]))


def reference(q, k, v, mask, scale) -> np.ndarray:
    """softmax(q k^T * scale + mask) v in float64, all ``(B, H, S, D)``."""
    s = np.einsum("bhsd,bhtd->bhst", q.astype(np.float64), k) * scale + mask
    e = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhst,bhtd->bhsd", e / e.sum(-1, keepdims=True), v)


def run_attention(spec: AttentionSpec, knobs=None, *, target=TARGET, seed=0):
    rng = np.random.default_rng(seed)
    full = (spec.batch, spec.heads)
    q = rng.standard_normal((*full, spec.queries, spec.dim)).astype(np.float32)
    k = rng.standard_normal((*full, spec.keys, spec.dim)).astype(np.float32)
    v = rng.standard_normal((*full, spec.keys, spec.dim)).astype(np.float32)
    mask = np.where(rng.random(spec.mask_shape) < 0.2, -1e4, 0.0).astype(np.float32)
    mask[..., 0] = 0.0  # every row keeps a key
    scale = np.float32(rng.uniform(0.1, 0.5))
    func = attention_kernel(spec, knobs).with_attr("global_symbol", "main")
    built = tvm.compile(func, target).jit()
    out_shape = spec.shape(spec.out_layout, spec.queries)
    out = tvm.runtime.tensor(np.full(out_shape, np.nan, np.float32))
    args = [
        _to_layout(q, spec.q_layout),
        _to_layout(k, spec.k_layout),
        _to_layout(v, spec.v_layout),
        mask,
        np.array(scale, np.float32),
    ]
    built["main"](*(tvm.runtime.tensor(a) for a in args), out)
    want = _to_layout(reference(q, k, v, mask, scale), spec.out_layout)
    return out.numpy(), want


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    heads=st.integers(1, 3),
    queries=st.integers(1, 40),
    keys=st.integers(1, 70),
    dim=st.sampled_from([1, 3, 8, 16, 17, 32]),
    layouts=st.tuples(
        st.sampled_from(["BSHD", "BHSD"]),
        st.sampled_from(["BSHD", "BHSD", "BHDS"]),
        st.sampled_from(["BSHD", "BHSD"]),
        st.sampled_from(["BSHD", "BHSD"]),
    ),
    mask_dims=st.tuples(*(st.booleans() for _ in range(4))),
    knobs=st.sampled_from([None, (5, 4, 4, 8), (16, 2, 1, 3), (7, 1, 2, 1)]),
    avx2=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_kernel_matches_numpy(
    batch, heads, queries, keys, dim, layouts, mask_dims, knobs, avx2, seed
):
    full = (batch, heads, queries, keys)
    mask_shape = tuple(size if keep else 1 for size, keep in zip(full, mask_dims, strict=True))
    spec = AttentionSpec(
        batch, heads, queries, keys, dim, *layouts, mask_shape=mask_shape, lanes=8 if avx2 else 16
    )
    got, want = run_attention(
        spec, None if knobs is None else AttentionKnobs(*knobs),
        target=AVX2 if avx2 else TARGET, seed=seed,
    )  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_minilm_attention():
    """The shape of all-MiniLM-L6's attention (12 heads of 32, 128 tokens, a (1, 1, S, T)
    mask), straight from the projections (``BSHD``), with its default knobs."""
    spec = AttentionSpec(1, 12, 128, 128, 32, mask_shape=(1, 1, 128, 128))
    assert default_attention_knobs(spec, cores=2).rows == 128  # 12 heads: 6 tasks a core
    assert default_attention_knobs(spec, cores=16).rows == 16  # rows split for 16 cores
    got, want = run_attention(spec)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_masked_keys_get_no_weight():
    """A key masked with a large negative number contributes nothing, whatever its value."""
    spec = AttentionSpec(1, 1, 3, 20, 16, "BHSD", "BHSD", "BHSD", "BHSD", (1, 1, 1, 20))
    q = np.ones((1, 1, 3, 16), np.float32)
    k = np.zeros((1, 1, 20, 16), np.float32)
    v = np.zeros((1, 1, 20, 16), np.float32)
    v[0, 0, 5] = 1e6  # masked out below
    mask = np.zeros((1, 1, 1, 20), np.float32)
    mask[..., 5] = -1e30
    func = attention_kernel(spec).with_attr("global_symbol", "main")
    built = tvm.compile(func, TARGET).jit()
    out = tvm.runtime.tensor(np.full((1, 1, 3, 16), np.nan, np.float32))
    built["main"](*(tvm.runtime.tensor(a) for a in (q, k, v, mask, np.float32(1.0))), out)
    np.testing.assert_array_equal(out.numpy(), np.zeros((1, 1, 3, 16), np.float32))


def test_spec_refuses_what_the_kernel_cannot_run():
    with pytest.raises(ValueError, match="mask shape"):
        AttentionSpec(1, 2, 4, 4, 8, mask_shape=(1, 3, 1, 4))
    with pytest.raises(ValueError, match="k_layout"):
        AttentionSpec(1, 2, 4, 4, 8, k_layout="BDHS")
    with pytest.raises(ValueError, match="q_layout"):
        AttentionSpec(1, 2, 4, 4, 8, q_layout="BHDS")


def test_fast_exp_is_topis():
    """Bit for bit what ``topi.fast_exp`` (the rest of a model's float32 exps) computes, over the
    clamped range and past it."""
    x = np.concatenate(
        [np.linspace(-100, 100, 4001, dtype=np.float32), np.float32([0, -0.0, 1e-30, -1e-30])]
    )
    placeholder = te.placeholder(x.shape, "float32", "x")
    topi_exp = te.create_prim_func([placeholder, topi.fast_exp(placeholder)])
    ours = te.create_prim_func(
        [placeholder, te.compute(x.shape, lambda i: fast_exp(placeholder[i]))]
    )
    outs = []
    for func in (topi_exp, ours):
        built = tvm.compile(func.with_attr("global_symbol", "main"), "llvm").jit()
        out = tvm.runtime.tensor(np.zeros_like(x))
        built["main"](tvm.runtime.tensor(x), out)
        outs.append(out.numpy())
    np.testing.assert_array_equal(outs[1], outs[0])
    finite = np.abs(x) < 80
    np.testing.assert_allclose(outs[1][finite], np.exp(x[finite].astype(np.float64)), rtol=1e-5)
