"""im2col for NVIDIA GPUs: the patches of an NCHW image as the columns of the SpMM's X.

Same result as :func:`sparse_tvm.kernels.im2col_kernel` (row ``q = (ci * kh + i) * kw + j``,
column ``p = oy * ow + ox``, zero padding); one thread per output element, consecutive threads
along ``p`` so that the stores are coalesced. ``emulate`` gives the CPU twin (serial loops).
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from sparse_tvm.errors import InputShapeError

from ..im2col import conv_output_size
from ._loops import thread_loop

THREADS = 256


def cuda_im2col_kernel(*geometry, emulate: bool = False) -> tvm.tirx.PrimFunc:
    """Build the im2col kernel ``(X, COL)``.

    ``geometry``: ``batch, channels, height, width, kernel, stride, padding, dilation`` as
    :func:`~sparse_tvm.kernels.im2col_kernel` takes them.
    """
    batch, channels, height, width, (kh, kw), (sh, sw), padding, (dh, dw) = geometry
    pt, pl, pb, pr = padding
    oh = conv_output_size(height, kh, sh, pt, pb, dh)
    ow = conv_output_size(width, kw, sw, pl, pr, dw)
    if min(oh, ow) < 1:
        raise InputShapeError(
            f"convolution output is empty (oh={oh}, ow={ow}): the input is smaller than the "
            "kernel; give a larger input shape"
        )
    rows, h, w = channels * kh * kw, height, width
    total = batch * rows * oh * ow
    blocks = -(-total // THREADS)

    @T.prim_func
    def im2col(
        X: T.Buffer((batch, channels, h, w), "float32"),
        COL: T.Buffer((batch, rows, oh * ow), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for bx in thread_loop(blocks, "blockIdx.x", emulate):
            for tx in thread_loop(THREADS, "threadIdx.x", emulate):
                idx = T.meta_var(bx * THREADS + tx)
                if idx < total:
                    p = T.meta_var(idx % (oh * ow))
                    q = T.meta_var(idx // (oh * ow) % rows)
                    b = T.meta_var(idx // (oh * ow * rows))
                    y = T.meta_var(p // ow * sh - pt + q // kw % kh * dh)
                    x = T.meta_var(p % ow * sw - pl + q % kw * dw)
                    COL[b, q, p] = T.if_then_else(
                        y >= 0 and y < h and x >= 0 and x < w,
                        X[b, q // (kh * kw), T.max(T.min(y, h - 1), 0), T.max(T.min(x, w - 1), 0)],
                        T.float32(0),
                    )

    return im2col
