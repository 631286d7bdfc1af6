"""The NCHW depthwise conv kernel against a numpy depthwise conv, on random geometries (kernel
sizes, strides 1-3, asymmetric padding, rows narrower than a vector), with and without a bias,
for each fused activation, on AVX-512 and AVX2 widths."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from sparse_tvm.kernels.depthwise_conv import ACTIVATIONS, DepthwiseConv, depthwise_conv_kernel
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


def _reference(x, w, b, geometry: DepthwiseConv, activation) -> np.ndarray:
    top, left, bottom, right = geometry.padding
    p = np.pad(x[0].astype(np.float64), ((0, 0), (top, bottom), (left, right)))
    kh, kw = geometry.kernel
    s = geometry.stride
    oh, ow = geometry.out_hw
    out = np.zeros((geometry.channels, oh, ow))
    for i in range(kh):
        for j in range(kw):
            tap = p[:, i : i + s * (oh - 1) + 1 : s, j : j + s * (ow - 1) + 1 : s]
            out += w[:, 0, i, j, None, None] * tap
    out += b[:, None, None]
    if activation is not None:
        out = np.maximum(out, 0)
    if activation == "relu6":
        out = np.minimum(out, 6)
    return out[None].astype(np.float32)


def _run(geometry: DepthwiseConv, *, bias: bool, activation, lanes: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    c, kh, kw = geometry.channels, *geometry.kernel
    x = (rng.standard_normal((1, c, geometry.height, geometry.width)) * 3).astype(np.float32)
    w = rng.standard_normal((c, 1, kh, kw)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else np.zeros(c, np.float32)
    func = depthwise_conv_kernel(geometry, activation=activation, lanes=lanes)
    built = tvm.compile(func.with_attr("global_symbol", "main"), TARGET).jit()
    dev = tvm.cpu()
    out = tvm.runtime.tensor(np.full((1, c, *geometry.out_hw), np.nan, np.float32), dev)
    built["main"](*(tvm.runtime.tensor(a, dev) for a in (x, w, b)), out)
    return out.numpy(), _reference(x, w, b, geometry, activation)


@settings(max_examples=12, deadline=None)
@given(
    channels=st.integers(1, 5),
    height=st.integers(1, 19),
    width=st.integers(1, 41),
    kernel=st.sampled_from([(1, 1), (3, 3), (5, 5), (3, 1), (1, 3)]),
    stride=st.integers(1, 3),
    padding=st.tuples(*(st.integers(0, 2) for _ in range(4))),
    bias=st.booleans(),
    activation=st.sampled_from(ACTIVATIONS),
    lanes=st.sampled_from([8, 16]),
)
def test_kernel_matches_numpy(
    channels, height, width, kernel, stride, padding, bias, activation, lanes
):
    geometry = DepthwiseConv(channels, height, width, kernel, stride, padding)
    assume(min(geometry.out_hw) >= 1)  # else the kernel is larger than the padded image
    got, want = _run(geometry, bias=bias, activation=activation, lanes=lanes)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_mobilenet_shape(stride):
    """A MobileNet depthwise layer: 3x3, pad 1, rows wider than one 2-vector step."""
    geometry = DepthwiseConv(8, 56, 56, (3, 3), stride, (1, 1, 1, 1))
    got, want = _run(geometry, bias=True, activation="relu6", lanes=16, seed=1)
    assert got.shape == (1, 8, 56 // stride, 56 // stride)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_unknown_activation_is_refused():
    geometry = DepthwiseConv(2, 8, 8, (3, 3), 1, (1, 1, 1, 1))
    with pytest.raises(ValueError, match="activation 'gelu'"):
        depthwise_conv_kernel(geometry, activation="gelu")
