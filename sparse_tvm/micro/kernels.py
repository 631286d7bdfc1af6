"""Sparse kernels for microcontrollers, in TVMScript, generated to C by TVM's ``c`` target.

The x86 kernels of :mod:`sparse_tvm.kernels` carry their schedule in their loops
(``T.parallel``, ``T.vectorized``, register tiles sized for AVX): the ``c`` target would turn
those into thread-pool calls and vector types that a Cortex-M compiler rejects. These are the
same computations written serially for one in-order core, and specialised for flash:

- weights are :class:`~sparse_tvm.micro.compact.CompactSparseWeight` (``r x 1`` blocks, 8-bit
  delta or 16-bit indices), so one decoded index feeds ``r`` multiply-adds;
- a ``k x k`` convolution runs *directly* (scatter form: for every nonzero weight, one
  multiply-add over the valid output window) instead of im2col + SpMM: the column buffer,
  ``c * kh * kw * oh * ow`` floats, would often be larger than the whole RAM of the device.

Every kernel takes ``(X, data, indices, indptr, [bias], Y)`` and fuses bias and ReLU.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from sparse_tvm.micro.compact import CompactSparseWeight

_ATTRS = {"tirx.is_scheduled": True, "tirx.noalias": True}


def column_decoder(weight):
    """``(start, step)`` macros that track the block column of block ``b`` in ``col[0]``
    (a :class:`CompactSparseWeight` or ``MicroInt8Weight``: 8-bit deltas or columns)."""
    delta = weight.encoding == "delta8"

    @T.macro
    def start(col):
        col[0] = 0

    @T.macro
    def step(col, indices, b):
        if delta:
            col[0] = col[0] + T.Cast("int32", indices[b])
        else:
            col[0] = T.Cast("int32", indices[b])

    return start, step


def _signature(weight: CompactSparseWeight, x_shape, y_shape, bias: bool, body):
    """Wrap ``body(X, data, indices, indptr, B, Y)`` into the public PrimFunc."""
    d_len, i_len = int(weight.data.shape[0]), int(weight.indices.shape[0])
    p_len = int(weight.indptr.shape[0])
    i_dtype, p_dtype = str(weight.indices.dtype), str(weight.indptr.dtype)
    n = weight.shape[0]
    if bias:

        @T.prim_func
        def kernel(
            X: T.Buffer(x_shape, "float32"),
            data: T.Buffer((d_len,), "float32"),
            indices: T.Buffer((i_len,), i_dtype),
            indptr: T.Buffer((p_len,), p_dtype),
            bias: T.Buffer((n,), "float32"),
            Y: T.Buffer(y_shape, "float32"),
        ):
            T.func_attr(_ATTRS)
            body(X, data, indices, indptr, bias, Y)

    else:

        @T.prim_func
        def kernel(
            X: T.Buffer(x_shape, "float32"),
            data: T.Buffer((d_len,), "float32"),
            indices: T.Buffer((i_len,), i_dtype),
            indptr: T.Buffer((p_len,), p_dtype),
            Y: T.Buffer(y_shape, "float32"),
        ):
            T.func_attr(_ATTRS)
            body(X, data, indices, indptr, None, Y)

    return kernel


def spmm_rows(weight: CompactSparseWeight, m: int, *, bias: bool, relu: bool) -> tvm.tirx.PrimFunc:
    """``Y (m, n) = X (m, k) @ W.T`` (+ bias, ReLU): a MatMul / Gemm layer."""
    n, k = weight.shape
    r, nbr = weight.r, weight.block_rows
    start, step = column_decoder(weight)

    @T.macro
    def body(X, data, indices, indptr, B, Y):
        for mi, br in T.grid(m, nbr):
            acc = T.alloc_buffer((r,), "float32", scope="global")
            col = T.alloc_buffer((1,), "int32", scope="global")
            for ri in T.unroll(r):
                acc[ri] = T.float32(0)
            start(col)
            for b in range(T.Cast("int32", indptr[br]), T.Cast("int32", indptr[br + 1])):
                step(col, indices, b)
                for ri in T.unroll(r):
                    acc[ri] = acc[ri] + data[b * r + ri] * X[mi, col[0]]
            for ri in T.unroll(r):
                if br * r + ri < n:
                    value = T.meta_var(acc[ri] + B[br * r + ri] if bias else acc[ri])
                    Y[mi, br * r + ri] = T.max(value, T.float32(0)) if relu else value

    return _signature(weight, (m, k), (m, n), bias, body)


def spmm_channels(
    weight: CompactSparseWeight, batch: int, m: int, *, bias: bool, relu: bool
) -> tvm.tirx.PrimFunc:
    """``Y[b] (n, m) = W @ X[b] (k, m)`` (+ bias, ReLU): a 1x1 convolution in NCHW."""
    n, k = weight.shape
    r, nbr = weight.r, weight.block_rows
    start, step = column_decoder(weight)

    @T.macro
    def body(X, data, indices, indptr, B, Y):
        for bi, br in T.grid(batch, nbr):
            col = T.alloc_buffer((1,), "int32", scope="global")
            for ri in T.unroll(r):
                if br * r + ri < n:
                    for p in range(m):
                        Y[bi, br * r + ri, p] = B[br * r + ri] if bias else T.float32(0)
            start(col)
            for b in range(T.Cast("int32", indptr[br]), T.Cast("int32", indptr[br + 1])):
                step(col, indices, b)
                for ri in T.unroll(r):
                    if br * r + ri < n:
                        for p in range(m):
                            Y[bi, br * r + ri, p] = (
                                Y[bi, br * r + ri, p] + data[b * r + ri] * X[bi, col[0], p]
                            )
            if relu:
                for ri in T.unroll(r):
                    if br * r + ri < n:
                        for p in range(m):
                            Y[bi, br * r + ri, p] = T.max(Y[bi, br * r + ri, p], T.float32(0))

    return _signature(weight, (batch, k, m), (batch, n, m), bias, body)


def sparse_conv2d(
    weight: CompactSparseWeight,
    input_shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    strides: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
    output_hw: tuple[int, int],
    *,
    bias: bool,
    relu: bool,
) -> tvm.tirx.PrimFunc:
    """Direct sparse NCHW convolution (groups 1), weight viewed as ``(out, in * kh * kw)``.

    For each stored weight ``(co, ci, i, j)`` the kernel adds ``w * X[ci]`` shifted by
    ``(i, j)`` into the output plane ``co``, over the window where the shifted input lies
    inside the image: padding costs neither memory nor a test per multiply-add.
    """
    n = weight.shape[0]
    batch, _, h, w = input_shape
    kh, kw = kernel
    sh, sw = strides
    pt, pl, _, _ = padding
    dh, dw = dilation
    oh, ow = output_hw
    r, nbr = weight.r, weight.block_rows
    start, step = column_decoder(weight)

    @T.macro
    def body(X, data, indices, indptr, B, Y):
        for bi, br in T.grid(batch, nbr):
            col = T.alloc_buffer((1,), "int32", scope="global")
            for ri in T.unroll(r):
                if br * r + ri < n:
                    for oy, ox in T.grid(oh, ow):
                        Y[bi, br * r + ri, oy, ox] = B[br * r + ri] if bias else T.float32(0)
            start(col)
            for b in range(T.Cast("int32", indptr[br]), T.Cast("int32", indptr[br + 1])):
                step(col, indices, b)
                ci = T.meta_var(col[0] // (kh * kw))
                i = T.meta_var(col[0] // kw % kh)
                j = T.meta_var(col[0] % kw)
                # output rows / columns whose input row / column is inside the image
                y0 = T.meta_var(T.max((pt - i * dh + sh - 1) // sh, 0))
                y1 = T.meta_var(T.min((h - 1 + pt - i * dh) // sh + 1, oh))
                x0 = T.meta_var(T.max((pl - j * dw + sw - 1) // sw, 0))
                x1 = T.meta_var(T.min((w - 1 + pl - j * dw) // sw + 1, ow))
                for ri in T.unroll(r):
                    if br * r + ri < n:
                        for oy in range(y0, T.max(y1, y0)):
                            for ox in range(x0, T.max(x1, x0)):
                                Y[bi, br * r + ri, oy, ox] = (
                                    Y[bi, br * r + ri, oy, ox]
                                    + data[b * r + ri]
                                    * X[bi, ci, oy * sh - pt + i * dh, ox * sw - pl + j * dw]
                                )
            if relu:
                for ri in T.unroll(r):
                    if br * r + ri < n:
                        for oy, ox in T.grid(oh, ow):
                            Y[bi, br * r + ri, oy, ox] = T.max(
                                Y[bi, br * r + ri, oy, ox], T.float32(0)
                            )

    x_shape = tuple(int(s) for s in input_shape)
    return _signature(weight, x_shape, (batch, n, oh, ow), bias, body)
