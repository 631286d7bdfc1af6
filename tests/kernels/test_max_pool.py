"""The NCHW max pool kernel against a numpy max pool, on random geometries (window sizes,
strides 1-3, asymmetric padding, rows narrower than a vector, all-negative inputs so that a
padded element that won a max would show), on AVX-512 and AVX2 widths."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sparse_tvm.kernels.depthwise_conv import DepthwiseConv
from sparse_tvm.kernels.max_pool import max_pool_kernel
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


def _reference(x: np.ndarray, geometry: DepthwiseConv) -> np.ndarray:
    top, left, bottom, right = geometry.padding
    p = np.pad(x[0], ((0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
    kh, kw = geometry.kernel
    s = geometry.stride
    oh, ow = geometry.out_hw
    out = np.full((geometry.channels, oh, ow), -np.inf, np.float32)
    for i in range(kh):
        for j in range(kw):
            out = np.maximum(out, p[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s])
    return out[None]


def _run(geometry: DepthwiseConv, *, lanes: int, seed: int = 0, shift: float = 0.0):
    rng = np.random.default_rng(seed)
    shape = (1, geometry.channels, geometry.height, geometry.width)
    x = (rng.standard_normal(shape) + shift).astype(np.float32)
    func = max_pool_kernel(geometry, lanes=lanes)
    built = tvm.compile(func.with_attr("global_symbol", "main"), TARGET).jit()
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.full((1, geometry.channels, *geometry.out_hw), np.nan, np.float32))
    built["main"](tvm.runtime.tensor(x, dev), out)
    return out.numpy(), _reference(x, geometry)


@settings(max_examples=12, deadline=None)
@given(
    channels=st.integers(1, 5),
    height=st.integers(1, 19),
    width=st.integers(1, 41),
    kernel=st.sampled_from([(2, 2), (3, 3), (5, 5), (3, 1), (1, 3)]),
    stride=st.integers(1, 3),
    padding=st.tuples(*(st.integers(0, 1) for _ in range(4))),
    lanes=st.sampled_from([8, 16]),
    negative=st.booleans(),
)
def test_kernel_matches_numpy(channels, height, width, kernel, stride, padding, lanes, negative):
    geometry = DepthwiseConv(channels, height, width, kernel, stride, padding)
    # every window holds at least one image element (ONNX requires pads < the kernel size)
    assume(min(geometry.out_hw) >= 1 and all(p < min(kernel) for p in padding))
    got, want = _run(geometry, lanes=lanes, shift=-10.0 if negative else 0.0)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("size", [112, 7])
def test_resnet_stem_pool(size):
    """ResNet-50's stem pool: 3x3, stride 2, pad 1, after a ReLU-free all-negative input."""
    geometry = DepthwiseConv(4, size, size, (3, 3), 2, (1, 1, 1, 1))
    got, want = _run(geometry, lanes=16, seed=1, shift=-5.0)
    assert got.shape == (1, 4, -(-size // 2), -(-size // 2))
    np.testing.assert_array_equal(got, want)
