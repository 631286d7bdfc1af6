"""A conv's input patches for the micro int8 kernels: the padded input, and where each weight
reads in it.

An NCHW convolution is a matmul over patches: output pixel ``p = (b, oy, ox)`` reads the
weight's column ``(c, i, j)`` at ``X[b, c, oy * sh - pt + i * dh, ox * sw - pl + j * dw]``.
With the input padded once (8-bit, the border its zero point: the quantized 0.0), that element
is ``padded[base(p) + offset(c, i, j)]`` in the flat padded tensor, no bounds test:

``base(p) = b * C * Hp * Wp + oy * sh * Wp + ox * sw``, ``offset(c, i, j) = c * Hp * Wp +
i * dh * Wp + j * dw``.

The sparse int8 kernel stores ``offset`` as each block's column index ("direct": no im2col
buffer, the x86 back end's DIRECT SpMM does the same); the dense int8 kernel reads rows
copied out by :func:`im2col_kernel` (``(B * OH * OW) x (C * KH * KW)`` bytes).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm.script import tirx as T

from sparse_tvm.analysis.layers import ConvGeometry

__all__ = ["im2col_kernel", "pad_kernel", "padded_shape", "patch_bases", "patch_offsets"]

_ATTRS = {"tirx.is_scheduled": True, "tirx.noalias": True, "op_pattern": 8}  # 8: opaque


def padded_shape(conv: ConvGeometry) -> tuple[int, int, int, int]:
    """``(B, C, Hp, Wp)``: the input with its padding."""
    batch, channels, h, w = (int(s) for s in conv.input_shape)
    pt, pl, pb, pr = conv.padding
    return batch, channels, h + pt + pb, w + pl + pr


def patch_offsets(conv: ConvGeometry) -> np.ndarray:
    """``offset(c, i, j)`` for the weight's columns in ``(c, i, j)`` order (module doc)."""
    _, channels, hp, wp = padded_shape(conv)
    kh, kw = conv.kernel
    dh, dw = conv.dilation
    c, i, j = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    return (c * hp * wp + i * dh * wp + j * dw).reshape(-1).astype(np.int64)


def patch_bases(conv: ConvGeometry):
    """``base(p)`` as a TIR expression of the pixel row ``p`` (module doc)."""
    _, channels, hp, wp = padded_shape(conv)
    oh, ow = conv.output_hw
    sh, sw = conv.strides

    def base(p):
        b, pixel = p // (oh * ow), p % (oh * ow)
        return b * (channels * hp * wp) + (pixel // ow) * (sh * wp) + (pixel % ow) * sw

    return base


def pad_kernel(conv: ConvGeometry, dtype: str, zero: int) -> tvm.tirx.PrimFunc:
    """``X`` (B, C, H, W) into the padded ``(B, C, Hp, Wp)``, the border ``zero``."""
    batch, channels, h, w = (int(s) for s in conv.input_shape)
    _, _, hp, wp = padded_shape(conv)
    pt, pl, _, _ = conv.padding

    pr = wp - pl - w

    @T.prim_func
    def pad(
        X: T.Buffer((batch, channels, h, w), dtype), P: T.Buffer((batch, channels, hp, wp), dtype)
    ):
        T.func_attr(_ATTRS)
        # the image's rows: left border, the row copied, right border; the others border only
        for b, c, y in T.grid(batch, channels, hp):
            if pt <= y and y < pt + h:
                for x in range(pl):
                    P[b, c, y, x] = T.Cast(dtype, zero)
                for x in range(w):
                    P[b, c, y, pl + x] = X[b, c, y - pt, x]
                for x in range(pr):
                    P[b, c, y, pl + w + x] = T.Cast(dtype, zero)
            else:
                for x in range(wp):
                    P[b, c, y, x] = T.Cast(dtype, zero)

    return pad


def im2col_kernel(conv: ConvGeometry, dtype: str) -> tvm.tirx.PrimFunc:
    """The padded input's patches as rows: ``C[p, (c, i, j)] = padded[base(p) + offset]``."""
    batch, channels, hp, wp = padded_shape(conv)
    oh, ow = conv.output_hw
    kh, kw = conv.kernel
    sh, sw = conv.strides
    dh, dw = conv.dilation
    m, k = batch * oh * ow, channels * kh * kw

    @T.prim_func
    def im2col(P: T.Buffer((batch, channels, hp, wp), dtype), C: T.Buffer((m, k), dtype)):
        T.func_attr(_ATTRS)
        for b, oy, ox, c, i, j in T.grid(batch, oh, ow, channels, kh, kw):
            C[(b * oh + oy) * ow + ox, (c * kh + i) * kw + j] = P[
                b, c, oy * sh + i * dh, ox * sw + j * dw
            ]

    return im2col
