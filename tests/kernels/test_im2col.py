"""im2col (NCHW and channels-last) against a numpy reference; im2col + SpMM against a direct
convolution in both layouts."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.errors import InputShapeError
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels import im2col_kernel, im2col_nhwc_kernel, spmm_kernel
from sparse_tvm.kernels.im2col import im2col_nhwc_columns_kernel
from tests.conftest import RUN_TARGET

TARGET = tvm.target.Target(RUN_TARGET)  # AVX-512 where the host has it (conftest)


def im2col_reference(x, kernel, stride, padding, dilation):
    """Rows ordered (ci, i, j) like ``conv_weight.reshape(out, -1)``; columns (oy, ox)."""
    b, c, h, w = x.shape
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
    col = np.empty((b, c, kh, kw, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            col[:, :, i, j] = xp[
                :,
                :,
                i * dh : i * dh + sh * (oh - 1) + 1 : sh,
                j * dw : j * dw + sw * (ow - 1) + 1 : sw,
            ]
    return col.reshape(b, c * kh * kw, oh * ow)


def run_im2col(x, kernel, stride, padding, dilation):
    b, c, h, w = x.shape
    func = im2col_kernel(b, c, h, w, kernel, stride, padding, dilation)
    rt = tvm.compile(func, TARGET).jit()
    rows, cols = (int(d) for d in func.params[1].shape[1:])
    out = tvm.runtime.tensor(np.full((b, rows, cols), np.nan, np.float32))
    rt["main"](tvm.runtime.tensor(x), out)
    return out.numpy()


@pytest.mark.parametrize(
    ("shape", "kernel", "stride", "padding", "dilation"),
    [
        ((1, 3, 8, 8), (3, 3), (1, 1), (1, 1, 1, 1), (1, 1)),
        ((2, 4, 9, 7), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),
        ((1, 2, 10, 11), (3, 2), (2, 1), (0, 2, 1, 0), (2, 2)),
        ((1, 5, 6, 6), (1, 1), (1, 1), (0, 0, 0, 0), (1, 1)),
        ((1, 1, 5, 5), (5, 5), (1, 1), (2, 2, 2, 2), (1, 1)),
        ((1, 3, 17, 19), (7, 7), (2, 2), (3, 3, 3, 3), (1, 1)),
    ],
)
def test_im2col_matches_reference(shape, kernel, stride, padding, dilation):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(
        run_im2col(x, kernel, stride, padding, dilation),
        im2col_reference(x, kernel, stride, padding, dilation),
    )


def test_im2col_then_spmm_is_a_convolution():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 9)).astype(np.float32)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    weight[rng.random(weight.shape) < 0.7] = 0
    kernel, stride, padding, dilation = (3, 3), (2, 2), (1, 1, 1, 1), (1, 1)
    col = run_im2col(x, kernel, stride, padding, dilation)
    # direct convolution reference
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.zeros((2, 6, 5, 5), np.float32)
    for oy in range(5):
        for ox in range(5):
            patch = xp[:, :, 2 * oy : 2 * oy + 3, 2 * ox : 2 * ox + 3]
            ref[:, :, oy, ox] = np.einsum("bchw,ochw->bo", patch, weight)
    bw = BlockSparseWeight.from_dense(weight.reshape(6, -1), (1, 1))
    func = spmm_kernel(bw, 25, x_layout="KM", batch=2, target=TARGET)
    y = tvm.runtime.tensor(np.zeros((2, 6, 25), np.float32))
    tvm.compile(func, TARGET).jit()["main"](
        *(tvm.runtime.tensor(a) for a in (col, bw.data, bw.indices, bw.indptr)), y
    )
    np.testing.assert_allclose(y.numpy().reshape(2, 6, 5, 5), ref, rtol=1e-4, atol=1e-4)


def test_im2col_is_scheduled_and_rejects_empty_output():
    func = im2col_kernel(1, 1, 4, 4, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
    assert bool(func.attrs["tirx.is_scheduled"])
    with pytest.raises(InputShapeError, match="empty"):  # a model input too small for it
        im2col_kernel(1, 1, 2, 2, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))


def run_im2col_nhwc(x_nhwc, kernel, stride, padding, dilation):
    b, h, w, c = x_nhwc.shape
    func = im2col_nhwc_kernel(b, c, h, w, kernel, stride, padding, dilation)
    rt = tvm.compile(func, TARGET).jit()
    rows, cols = (int(d) for d in func.params[1].shape)
    out = tvm.runtime.tensor(np.full((rows, cols), np.nan, np.float32))
    rt["main"](tvm.runtime.tensor(x_nhwc), out)
    return out.numpy()


def im2col_nhwc_reference(x_nhwc, kernel, stride, padding, dilation):
    """Rows (b, oy, ox); columns (i, j, ci) like an HWIO weight as ``(out, kh * kw * c)``."""
    col = im2col_reference(x_nhwc.transpose(0, 3, 1, 2), kernel, stride, padding, dilation)
    b, c = x_nhwc.shape[0], x_nhwc.shape[3]
    kh, kw = kernel
    pixels = col.shape[-1]
    return col.reshape(b, c, kh, kw, pixels).transpose(0, 4, 2, 3, 1).reshape(b * pixels, -1)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.sampled_from([1, 3, 4, 8, 16, 24, 32]),
    size=st.tuples(st.integers(3, 12), st.integers(3, 12)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
)
def test_im2col_nhwc_matches_reference(batch, channels, size, kernel, stride, padding, dilation):
    span = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    if size[0] + padding[0] + padding[2] < span[0] or size[1] + padding[1] + padding[3] < span[1]:
        return  # an empty output: rejected, tested below
    x = np.random.default_rng(0).standard_normal((batch, *size, channels)).astype(np.float32)
    np.testing.assert_array_equal(
        run_im2col_nhwc(x, kernel, stride, padding, dilation),
        im2col_nhwc_reference(x, kernel, stride, padding, dilation),
    )


def run_im2col_nhwc_columns(x_nhwc, kernel, stride, padding, dilation, lanes):
    b, h, w, c = x_nhwc.shape
    func = im2col_nhwc_columns_kernel(b, c, h, w, kernel, stride, padding, dilation, lanes)
    rt = tvm.compile(func, TARGET).jit()
    rows, cols = (int(d) for d in func.params[1].shape)
    out = tvm.runtime.tensor(np.full((rows, cols), np.nan, np.float32))
    rt["main"](tvm.runtime.tensor(x_nhwc), out)
    return out.numpy()


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    channels=st.sampled_from([3, 4, 8, 16, 32, 48]),
    size=st.tuples(st.integers(3, 21), st.integers(3, 21)),
    kernel=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    stride=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    padding=st.tuples(*[st.integers(0, 2)] * 4),
    dilation=st.tuples(st.integers(1, 2), st.integers(1, 2)),
    lanes=st.sampled_from([4, 8, 16]),
)
def test_im2col_nhwc_columns_is_the_transposed_rows(
    batch, channels, size, kernel, stride, padding, dilation, lanes
):
    """The columns kernel (register-transposed tiles of pixels x channels, the padding as zero
    vectors, the last tile shifted back) writes the transpose of the rows kernel's matrix."""
    span = [d * (k - 1) + 1 for d, k in zip(dilation, kernel)]
    if size[0] + padding[0] + padding[2] < span[0] or size[1] + padding[1] + padding[3] < span[1]:
        return
    x = np.random.default_rng(0).standard_normal((batch, *size, channels)).astype(np.float32)
    np.testing.assert_array_equal(
        run_im2col_nhwc_columns(x, kernel, stride, padding, dilation, lanes),
        im2col_nhwc_reference(x, kernel, stride, padding, dilation).T,
    )


def test_im2col_nhwc_columns_resnet_shape():
    """A ResNet-50 layer1 3x3 conv's im2col: 56x56 pixels, 64 channels, whole 16 x 16 tiles."""
    x = np.random.default_rng(3).standard_normal((1, 56, 56, 64)).astype(np.float32)
    args = ((3, 3), (1, 1), (1, 1, 1, 1), (1, 1))
    np.testing.assert_array_equal(
        run_im2col_nhwc_columns(x, *args, lanes=16), im2col_nhwc_reference(x, *args).T
    )


@pytest.mark.parametrize("block", [(1, 1), (4, 1), (16, 1)])
def test_nhwc_im2col_then_spmm_is_a_convolution(block):
    """Channels-last: COL (pixels, kh*kw*c) @ W^T in the "MK" layout is the NHWC output."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 9, 9, 8)).astype(np.float32)
    weight = rng.standard_normal((3, 3, 8, 32)).astype(np.float32)  # HWIO
    weight[rng.random(weight.shape) < 0.7] = 0
    col = run_im2col_nhwc(x, (3, 3), (2, 2), (1, 1, 1, 1), (1, 1))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((1, 5, 5, 32), np.float32)
    for oy in range(5):
        for ox in range(5):
            patch = xp[:, 2 * oy : 2 * oy + 3, 2 * ox : 2 * ox + 3, :]
            ref[:, oy, ox] = np.einsum("bhwc,hwco->bo", patch, weight)
    w_nk = weight.transpose(3, 0, 1, 2).reshape(32, -1)
    bw = BlockSparseWeight.from_dense(w_nk, block)
    func = spmm_kernel(bw, 25, x_layout="MK", target=TARGET)
    y = tvm.runtime.tensor(np.zeros((25, 32), np.float32))
    tvm.compile(func, TARGET).jit()["main"](
        *(tvm.runtime.tensor(a) for a in (col, bw.data, bw.indices, bw.indptr)), y
    )
    np.testing.assert_allclose(y.numpy().reshape(1, 5, 5, 32), ref, rtol=1e-4, atol=1e-4)


def test_im2col_nhwc_rejects_empty_output():
    assert bool(
        im2col_nhwc_kernel(1, 4, 4, 4, (3, 3), (1, 1), (0,) * 4, (1, 1)).attrs["tirx.is_scheduled"]
    )
    with pytest.raises(InputShapeError, match="empty"):
        im2col_nhwc_kernel(1, 1, 2, 2, (3, 3), (1, 1), (0, 0, 0, 0), (1, 1))
