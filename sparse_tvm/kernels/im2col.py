"""im2col: unfold the patches of an NCHW image into columns for a sparse convolution.

A ``kh x kw`` convolution with a sparse weight runs as ``im2col`` followed by the SpMM kernel
in layout ``"KM"``: ``Y[b] = W @ COL[b]`` with ``W = weight.reshape(out_channels, -1)``.
Why: it reuses the one tuned SpMM micro-kernel (register tiles, vectorisation along the pixels)
instead of a second direct sparse-conv kernel per kernel size, stride and dilation; the cost is
a ``(batch, c * kh * kw, oh * ow)`` float32 buffer, ``kh * kw`` times the input for stride 1,
written once and read by the SpMM with unit stride. A 1x1 stride-1 unpadded conv needs no
im2col: its NCHW input already is ``(batch, c, h * w)``.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from sparse_tvm.errors import InputShapeError


def conv_output_size(
    size: int, kernel: int, stride: int, pad_begin: int, pad_end: int, dilation: int
) -> int:
    """Output length of one spatial axis (ONNX/PyTorch formula, floor rounding)."""
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _output_hw(height, width, kernel, stride, padding, dilation) -> tuple[int, int]:
    """``(oh, ow)`` of a conv; an empty output is the user's input shape's fault: say so."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr), (dh, dw) = kernel, stride, padding, dilation
    oh = conv_output_size(height, kh, sh, pt, pb, dh)
    ow = conv_output_size(width, kw, sw, pl, pr, dw)
    if oh < 1 or ow < 1:
        raise InputShapeError(
            f"convolution output is empty (oh={oh}, ow={ow}): the input is smaller than the "
            "kernel; give a larger input shape"
        )
    return oh, ow


def im2col_kernel(
    batch: int,
    channels: int,
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
) -> tvm.tirx.PrimFunc:
    """Build the im2col kernel ``(X, COL)``.

    Parameters
    ----------
    batch, channels, height, width : int
        Shape of the NCHW input ``X``.
    kernel, stride, dilation : tuple[int, int]
        ``(kh, kw)``, ``(sh, sw)``, ``(dh, dw)``.
    padding : tuple[int, int, int, int]
        ``(top, left, bottom, right)``, the ONNX ``pads`` order; padded values are zero.

    Returns
    -------
    tvm.tirx.PrimFunc
        Parameters ``X`` float32 ``(batch, c, h, w)`` and ``COL`` float32
        ``(batch, c * kh * kw, oh * ow)`` where row ``q = (ci * kh + i) * kw + j`` of ``COL``
        matches column ``q`` of the ONNX Conv weight ``w.reshape(out, -1)``, and column
        ``p = oy * ow + ox``. Marked ``tirx.is_scheduled``; parallel over ``(batch, q)``,
        vectorised along ``ox``.
    """
    kh, kw = kernel
    sh, sw = stride
    pt, pl, _, _ = padding
    dh, dw = dilation
    oh, ow = _output_hw(height, width, kernel, stride, padding, dilation)
    rows = channels * kh * kw
    h, w = height, width

    @T.prim_func
    def im2col(
        X: T.Buffer((batch, channels, h, w), "float32"),
        COL: T.Buffer((batch, rows, oh * ow), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for it in T.parallel(batch * rows):
            b = T.meta_var(it // rows)
            q = T.meta_var(it % rows)
            ci = T.meta_var(q // (kh * kw))
            i = T.meta_var(q // kw % kh)
            j = T.meta_var(q % kw)
            for oy in range(oh):
                y = T.meta_var(oy * sh - pt + i * dh)
                for ox in T.vectorized(ow):
                    x = T.meta_var(ox * sw - pl + j * dw)
                    COL[b, q, oy * ow + ox] = T.if_then_else(
                        y >= 0 and y < h and x >= 0 and x < w,
                        X[b, ci, T.max(T.min(y, h - 1), 0), T.max(T.min(x, w - 1), 0)],
                        T.float32(0),
                    )

    return im2col


def _channel_lanes(channels: int) -> int:
    """The vector width of the channel loop: 16, 8 or 4 floats when it divides, else 1."""
    return next((lanes for lanes in (16, 8, 4) if channels % lanes == 0), 1)


def im2col_nhwc_kernel(
    batch: int,
    channels: int,
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
) -> tvm.tirx.PrimFunc:
    """Build the channels-last im2col kernel ``(X, COL)``: one row per output pixel.

    The SpMM then runs in the matmul layout ``"MK"``: ``Y = COL @ W^T`` with ``W`` the HWIO
    weight as ``(out, kh * kw * c)``, and ``Y`` is already the NHWC output.

    Parameters
    ----------
    batch, channels, height, width : int
        The input ``X`` is NHWC: ``(batch, height, width, channels)``.
    kernel, stride, dilation, padding
        As for :func:`im2col_kernel`.

    Returns
    -------
    tvm.tirx.PrimFunc
        Parameters ``X`` float32 ``(batch, h, w, c)`` and ``COL`` float32
        ``(batch * oh * ow, kh * kw * c)``: row ``p = (b * oh + oy) * ow + ox``, column
        ``q = (i * kw + j) * c + ci``. Marked ``tirx.is_scheduled``; parallel over output rows
        ``(b, oy)``, vectorised along the channels.
    """
    kh, kw = kernel
    sh, sw = stride
    pt, pl, _, _ = padding
    dh, dw = dilation
    oh, ow = _output_hw(height, width, kernel, stride, padding, dilation)
    cols = kh * kw * channels
    h, w = height, width
    lanes = _channel_lanes(channels)
    chunks = channels // lanes

    @T.prim_func
    def im2col_nhwc(
        X: T.Buffer((batch, h, w, channels), "float32"),
        COL: T.Buffer((batch * oh * ow, cols), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for row in T.parallel(batch * oh):
            b = T.meta_var(row // oh)
            oy = T.meta_var(row % oh)
            for ox, i, j, c0 in T.grid(ow, kh, kw, chunks):
                y = T.meta_var(oy * sh - pt + i * dh)
                x = T.meta_var(ox * sw - pl + j * dw)
                for c1 in T.vectorized(lanes):
                    COL[row * ow + ox, (i * kw + j) * channels + c0 * lanes + c1] = T.if_then_else(
                        y >= 0 and y < h and x >= 0 and x < w,
                        X[b, T.max(T.min(y, h - 1), 0), T.max(T.min(x, w - 1), 0), c0 * lanes + c1],
                        T.float32(0),
                    )

    return im2col_nhwc
