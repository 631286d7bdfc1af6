"""im2col of an NCHW or NHWC image into rows, any dtype, padded with a given value: the int8
conv's input.

A quantized model's conv with int8 operands runs as the int8 SpMM kernel
(:mod:`sparse_tvm.kernels.spmm_int8`), which reads its activations as ``(m, k)`` rows (the
matmul layout), on the 8-bit values the model's ``quantize`` wrote: row
``p = (b * oh + oy) * ow + ox`` is output pixel ``p``'s patch, column
``q = (ci * kh + i) * kw + j`` the ONNX weight's ``w.reshape(out, -1)`` column (channels-last:
``q = (i * kw + j) * c + ci``, the HWIO weight's). The padding is
the activations' zero point, the 8-bit value of 0.0 (what the float conv pads with once
dequantized). Bytes: ``kh * kw`` times the 8-bit input, a quarter of a float im2col's.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from sparse_tvm.kernels.im2col import im2col_nhwc_kernel, padded_read

__all__ = ["im2col_rows_kernel"]


def im2col_rows_kernel(geometry, dtype: str, pad_value: int) -> tvm.tirx.PrimFunc:
    """``(X, COL)``: ``X`` the ``geometry.layout`` (NCHW or NHWC) input of ``dtype``, ``COL``
    ``(batch * oh * ow, c * kh * kw)`` of ``dtype`` (module doc); parallel over the output
    rows of pixels. ``geometry``: a conv's ``analysis.layers.ConvGeometry``. NHWC is the float
    path's channels-last im2col (:func:`~sparse_tvm.kernels.im2col.im2col_nhwc_kernel`,
    columns ``(i * kw + j) * c + ci``, the HWIO weight's order) on ``dtype``."""
    batch, c, h, w = geometry.input_shape
    shape = (geometry.kernel, geometry.strides, geometry.padding, geometry.dilation)
    if geometry.layout == "NHWC":
        return im2col_nhwc_kernel(batch, c, h, w, *shape, dtype=dtype, pad_value=pad_value)
    kh, kw = geometry.kernel
    sh, sw = geometry.strides
    pt, pl, _, _ = geometry.padding
    dh, dw = geometry.dilation
    oh, ow = geometry.output_hw
    cols = c * kh * kw

    @T.prim_func
    def im2col_rows(X: T.Buffer((batch, c, h, w), dtype), COL: T.Buffer((batch * oh * ow, cols), dtype)):  # fmt: skip
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for row in T.parallel(batch * oh):
            b = T.meta_var(row // oh)
            oy = T.meta_var(row % oh)
            for ox, ci, i, j in T.grid(ow, c, kh, kw):
                y = T.meta_var(oy * sh - pt + i * dh)
                x = T.meta_var(ox * sw - pl + j * dw)
                COL[row * ow + ox, (ci * kh + i) * kw + j] = padded_read(
                    lambda yc, xc: X[b, ci, yc, xc],  # noqa: B023 (called at once)
                    y, x, h, w, T.Cast(dtype, pad_value),
                )  # fmt: skip

    return im2col_rows
