"""Operators whose TIR the CPU rules once raised on or the weight pre-packing split choked on:
compiled under the strict schedule setting (tests/conftest.py) and checked against numpy."""

from __future__ import annotations

import numpy as np
import pytest
from tvm import relax

from tests.pipeline.relax_run import run_relax

op = relax.op


_run = run_relax


X = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)


@pytest.mark.parametrize(
    ("fn", "reference"),
    [
        # a full reduction has no output axis: SpatialReduction raised IndexError on it
        (lambda a: op.sum(a), lambda a: a.sum()),
        (lambda a: op.mean(a), lambda a: a.mean()),
        # loops under the root and no sblock: SplitLayoutRewritePreproc asserted on them
        (lambda a: op.cumsum(a, axis=1), lambda a: np.cumsum(a, axis=1)),
    ],
    ids=["sum", "mean", "cumsum"],
)
def test_compiles_and_matches_numpy(fn, reference):
    np.testing.assert_allclose(_run(fn, X).numpy(), reference(X), rtol=1e-5, atol=1e-5)


def test_topk_compiles_and_matches_numpy():
    values, indices = _run(lambda a: op.topk(a, 3), X)
    order = np.argsort(-X, axis=1)[:, :3]
    np.testing.assert_array_equal(indices.numpy(), order)
    np.testing.assert_allclose(values.numpy(), np.take_along_axis(X, order, axis=1))


def _conv_nhwc_reference(x, w_hwio, stride, pad):
    """Direct NHWC convolution in numpy (HWIO weight, groups 1 or depthwise)."""
    b, h, wd, c = x.shape
    kh, kw, cin, cout = w_hwio.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    out = np.zeros((b, oh, ow, cout), np.float32)
    for i in range(kh):
        for j in range(kw):
            patch = xp[
                :, i : i + stride * (oh - 1) + 1 : stride, j : j + stride * (ow - 1) + 1 : stride
            ]
            if cin == c:
                out += np.einsum("bhwc,co->bhwo", patch, w_hwio[i, j])
            else:  # depthwise: one input channel per output channel
                out += patch * w_hwio[i, j, 0]
    return out


@pytest.mark.parametrize(
    ("size", "c_in", "c_out", "kernel", "stride", "groups"),
    [
        (14, 32, 64, 1, 1, 1),  # 14 pixels a row: the register tile once straddled two rows
        (7, 64, 128, 1, 1, 1),
        (28, 16, 48, 1, 1, 1),
        (9, 8, 32, 3, 1, 1),
        (15, 8, 16, 3, 2, 1),
        (14, 32, 32, 3, 1, 32),  # depthwise
        (15, 24, 24, 3, 2, 24),
    ],
)
def test_nhwc_conv_bias_relu_matches_numpy(size, c_in, c_out, kernel, stride, groups):
    """Channels-last convs as the CPU back ends compile CNNs (HWIO weights, fused epilogue)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, size, size, c_in)).astype(np.float32)
    w = rng.standard_normal((kernel, kernel, c_in // groups, c_out)).astype(np.float32)
    bias = rng.standard_normal((1, 1, 1, c_out)).astype(np.float32)
    pad = kernel // 2

    def conv(a, wt, b):
        y = op.nn.conv2d(
            a,
            wt,
            strides=stride,
            padding=pad,
            groups=groups,
            data_layout="NHWC",
            kernel_layout="HWIO",
        )
        return op.nn.relu(op.add(y, b))

    want = np.maximum(_conv_nhwc_reference(x, w, stride, pad) + bias, 0)
    np.testing.assert_allclose(_run(conv, x, w, bias).numpy(), want, rtol=1e-4, atol=1e-4)
