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


def padded_read(load, y, x, height: int, width: int, pad):
    """``load(y, x)`` where ``(y, x)`` lies inside the ``height x width`` image, else ``pad``
    (the indices clamped, so that the load is in bounds either way)."""
    inside = tvm.tirx.all(y >= 0, y < height, x >= 0, x < width)
    clamped = T.max(T.min(y, height - 1), 0), T.max(T.min(x, width - 1), 0)
    return T.if_then_else(inside, load(*clamped), pad)


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
                    COL[b, q, oy * ow + ox] = padded_read(
                        lambda yc, xc: X[b, ci, yc, xc],  # noqa: B023 (called at once)
                        y, x, h, w, T.float32(0),
                    )  # fmt: skip

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
    dtype: str = "float32",
    pad_value: int | float = 0,
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
    dtype, pad_value
        The tensors' dtype and the padding's value (an int8 conv's 8-bit input: its zero
        point).

    Returns
    -------
    tvm.tirx.PrimFunc
        Parameters ``X`` ``(batch, h, w, c)`` and ``COL``
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
        X: T.Buffer((batch, h, w, channels), dtype),
        COL: T.Buffer((batch * oh * ow, cols), dtype),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for row in T.parallel(batch * oh):
            b = T.meta_var(row // oh)
            oy = T.meta_var(row % oh)
            for ox, i, j, c0 in T.grid(ow, kh, kw, chunks):
                y = T.meta_var(oy * sh - pt + i * dh)
                x = T.meta_var(ox * sw - pl + j * dw)
                for c1 in T.vectorized(lanes):
                    COL[row * ow + ox, (i * kw + j) * channels + c0 * lanes + c1] = padded_read(
                        lambda yc, xc: X[b, yc, xc, c0 * lanes + c1],  # noqa: B023 (called at once)
                        y, x, h, w, T.Cast(dtype, pad_value),
                    )  # fmt: skip

    return im2col_nhwc


def im2col_nhwc_columns_kernel(
    batch: int,
    channels: int,
    height: int,
    width: int,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int, int, int],
    dilation: tuple[int, int],
    lanes: int = 16,
) -> tvm.tirx.PrimFunc:
    """Build the channels-last im2col kernel ``(X, COL)`` that writes the columns transposed:
    ``COL`` is ``(kh * kw * c, batch * oh * ow)``, the transpose of
    :func:`im2col_nhwc_kernel`'s output.

    Why: the sparse kernel for narrow blocks (``colvec``, 4x1 on AVX-512) is vectorised along
    the pixels, so it needs each input feature's pixels contiguous. Writing them so here costs
    the same shuffles as the transpose the kernel would otherwise do on the whole column
    matrix, without that matrix's extra round trip through memory (on a 56x56, 64-channel 3x3
    conv: 7 MB written and read again). Each tile of ``t`` consecutive output pixels (across
    output rows; the last tile shifted back to end at the last pixel) and ``t`` channels is
    ``t`` pixel vectors of ``X`` (zero where the kernel position falls in the padding)
    transposed in registers (:mod:`.transpose`); channel counts that are not a multiple of
    ``t`` (the first layer's 3) are copied one by one.

    Parameters as :func:`im2col_nhwc_kernel`, plus ``lanes`` (the machine's float32 vector
    width, which sets the tile ``t``). Row ``q = (i * kw + j) * c + ci`` and column
    ``p = (b * oh + oy) * ow + ox`` of ``COL``.
    """
    from .transpose import emit_vectors_transpose, tile_size

    kh, kw = kernel
    sh, sw = stride
    pt, pl, _, _ = padding
    dh, dw = dilation
    oh, ow = _output_hw(height, width, kernel, stride, padding, dilation)
    rows = kh * kw * channels
    pixels = batch * oh * ow
    h, w, c = height, width, channels
    t = tile_size(lanes)
    vector = pixels >= t and c % t == 0
    vtype = f"float32x{t}"

    def pixel_vector(Xf, p, i, j, c0):
        """Channels ``c0 : c0 + t`` of the input pixel under kernel position (i, j) of output
        pixel ``p`` (zeros in the padding)."""
        b, rest = p // (oh * ow), p % (oh * ow)
        y = rest // ow * sh - pt + i * dh
        x = rest % ow * sw - pl + j * dw
        address = ((b * h + T.max(T.min(y, h - 1), 0)) * w + T.max(T.min(x, w - 1), 0)) * c + c0
        inside = tvm.tirx.all(y >= 0, y < h, x >= 0, x < w)
        return T.if_then_else(inside, Xf.vload([address], vtype), T.Broadcast(T.float32(0), t))

    def emit_tile(Xf, Cf, p0, i, j, c0):
        vectors = [pixel_vector(Xf, p0 + r, i, j, c0) for r in range(t)]
        emit_vectors_transpose(vectors, Cf, ((i * kw + j) * c + c0) * pixels + p0, pixels, t)

    @T.prim_func
    def im2col_nhwc_columns(
        X: T.Buffer((batch, h, w, c), "float32"),
        COL: T.Buffer((rows, pixels), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        Xf = T.decl_buffer((batch * h * w * c,), "float32", data=X.data)
        Cf = T.decl_buffer((rows * pixels,), "float32", data=COL.data)
        if vector:
            for tp in T.parallel((pixels + t - 1) // t):
                for i, j, tc in T.grid(kh, kw, c // t):
                    emit_tile(Xf, Cf, T.min(tp * t, pixels - t), i, j, tc * t)
        else:
            for p in T.parallel(pixels):
                for i, j, ci in T.grid(kh, kw, c):
                    b = T.meta_var(p // (oh * ow))
                    y = T.meta_var(p % (oh * ow) // ow * sh - pt + i * dh)
                    x = T.meta_var(p % ow * sw - pl + j * dw)
                    COL[(i * kw + j) * c + ci, p] = T.if_then_else(
                        y >= 0 and y < h and x >= 0 and x < w,
                        X[b, T.max(T.min(y, h - 1), 0), T.max(T.min(x, w - 1), 0), ci],
                        T.float32(0),
                    )

    return im2col_nhwc_columns
