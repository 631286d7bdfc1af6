"""The 8-bit im2col into rows (the int8 conv's input) against numpy: NCHW and NHWC, strides,
dilation, uneven padding filled with the zero point, int8 and uint8."""

from __future__ import annotations

import numpy as np
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.analysis.layers import ConvGeometry
from sparse_tvm.kernels.im2col import conv_output_size
from sparse_tvm.kernels.im2col_rows import im2col_rows_kernel
from tests.conftest import RUN_TARGET
from tests.kernels.test_im2col import im2col_reference

TARGET = tvm.target.Target(RUN_TARGET)


def _rows_reference(x, geometry: ConvGeometry, pad_value: int) -> np.ndarray:
    """(b * oh * ow, c * kh * kw): the float reference's columns as rows, padded with
    ``pad_value`` (im2col of ``x - pad_value``, shifted back); ``x`` NCHW, the columns in
    the order of ``geometry.layout``'s weight ((c, i, j), NHWC: (i, j, c))."""
    shifted = x.astype(np.float32) - pad_value
    g = geometry
    col = im2col_reference(shifted, g.kernel, g.strides, g.padding, g.dilation) + pad_value
    rows = col.transpose(0, 2, 1).reshape(-1, col.shape[1])
    if g.layout == "NHWC":
        c, (kh, kw) = x.shape[1], g.kernel
        rows = rows.reshape(-1, c, kh, kw).transpose(0, 2, 3, 1).reshape(rows.shape)
    return rows.astype(x.dtype)


@settings(max_examples=16, deadline=None)
@given(
    c=st.integers(1, 3),
    hw=st.tuples(st.integers(3, 7), st.integers(3, 7)),
    kernel=st.sampled_from([(1, 1), (3, 3), (2, 3)]),
    stride=st.sampled_from([(1, 1), (2, 1), (2, 2)]),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    dilation=st.sampled_from([(1, 1), (2, 1)]),
    signed=st.booleans(),
    pad_value=st.integers(-128, 255),
    batch=st.integers(1, 2),
    layout=st.sampled_from(["NCHW", "NHWC"]),
)
def test_im2col_rows_matches_numpy(c, hw, kernel, stride, padding, dilation, signed, pad_value, batch, layout):  # fmt: skip
    dtype = "int8" if signed else "uint8"
    lo, hi = (-128, 127) if signed else (0, 255)
    pad_value = min(max(pad_value, lo), hi)
    (h, w), (kh, kw), (pt, pl, pb, pr) = hw, kernel, padding
    oh = conv_output_size(h, kh, stride[0], pt, pb, dilation[0])
    ow = conv_output_size(w, kw, stride[1], pl, pr, dilation[1])
    if oh < 1 or ow < 1:
        return
    geometry = ConvGeometry(
        (batch, c, h, w), kernel, stride, padding, dilation, 1, (oh, ow), layout
    )
    x = np.random.default_rng(c * h * w).integers(lo, hi + 1, (batch, c, h, w)).astype(dtype)
    given = x.transpose(0, 2, 3, 1).copy() if layout == "NHWC" else x

    func = im2col_rows_kernel(geometry, dtype, pad_value)
    out = tvm.runtime.tensor(np.zeros((batch * oh * ow, c * kh * kw), dtype))
    tvm.compile(func, TARGET).jit()["main"](tvm.runtime.tensor(given), out)
    np.testing.assert_array_equal(out.numpy(), _rows_reference(x, geometry, pad_value))
