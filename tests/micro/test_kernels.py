"""The micro sparse kernels against numpy / a reference convolution, built for the host
(llvm): the same TIR that the c target turns into C for the device."""

import numpy as np
import pytest
import tvm

from sparse_tvm.micro import kernels
from sparse_tvm.micro.compact import compact_weight


def _sparse(shape, density, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    w[rng.random(shape) > density] = 0
    return w


def _run(func, *arrays, out_shape):
    args = [tvm.runtime.tensor(a) for a in arrays]
    args.append(tvm.runtime.tensor(np.zeros(out_shape, np.float32)))
    tvm.compile(func, target="llvm")(*args)
    return args[-1].numpy()


def _conv_reference(x, w, b, stride, pad, dilation):
    n, c, h, wd = x.shape
    co, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - dilation * (kh - 1) - 1) // stride + 1
    ow = (wd + 2 * pad - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, co, oh, ow), np.float32)
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :,
                :,
                i * dilation : i * dilation + stride * (oh - 1) + 1 : stride,
                j * dilation : j * dilation + stride * (ow - 1) + 1 : stride,
            ]
            y += np.einsum("oc,ncyx->noyx", w[:, :, i, j], patch)
    return y + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("block", [(1, 1), (4, 1)])
@pytest.mark.parametrize("k", [48, 700])  # 700: delta8 with filler blocks
def test_spmm_rows_and_channels(block, k):
    rng = np.random.default_rng(0)
    w = _sparse((30, k), 0.1, rng)  # 30 rows: a ragged last block row for 4x1
    cw = compact_weight(w, block)
    b = rng.standard_normal(30).astype(np.float32)
    x = rng.standard_normal((5, k)).astype(np.float32)
    y = _run(
        kernels.spmm_rows(cw, 5, bias=True, relu=True),
        x,
        cw.data,
        cw.indices,
        cw.indptr,
        b,
        out_shape=(5, 30),
    )
    np.testing.assert_allclose(y, np.maximum(x @ w.T + b, 0), atol=1e-4)
    xc = rng.standard_normal((2, k, 7)).astype(np.float32)
    f = kernels.spmm_channels(cw, 2, 7, bias=False, relu=False)
    y = _run(f, xc, cw.data, cw.indices, cw.indptr, out_shape=(2, 30, 7))
    np.testing.assert_allclose(y, np.einsum("nk,bkm->bnm", w, xc), atol=1e-4)


@pytest.mark.parametrize(
    ("kernel", "stride", "pad", "dilation"),
    [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 2), (1, 2, 0, 1)],
)
def test_direct_sparse_conv(kernel, stride, pad, dilation):
    rng = np.random.default_rng(1)
    w4 = _sparse((6, 4, kernel, kernel), 0.3, rng)
    cw = compact_weight(w4.reshape(6, -1), (4, 1))
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    ref = _conv_reference(x, w4, b, stride, pad, dilation)
    f = kernels.sparse_conv2d(
        cw,
        x.shape,
        (kernel, kernel),
        (stride,) * 2,
        (pad,) * 4,
        (dilation,) * 2,
        ref.shape[2:],
        bias=True,
        relu=True,
    )
    y = _run(f, x, cw.data, cw.indices, cw.indptr, b, out_shape=ref.shape)
    np.testing.assert_allclose(y, np.maximum(ref, 0), atol=1e-4)
