"""An NCHW max pool, one channel at a time, from the depthwise conv's padded phase-split copy.

A max pool reads its input the way a depthwise conv does (a ``kh x kw`` window per output,
stride 2 in a CNN's stem), and TVM's generic NCHW schedule reads it with the same gathers:
ResNet-50's 3x3 / 2 pool of a 64 x 112 x 112 image took 1.25 ms on 2 Xeon cores, a twentieth of
the sparse model. This kernel takes one channel per parallel iteration, pads it with the
lowest float32 (a padded element never wins a max) and splits it into its ``stride ** 2``
phases (:func:`~.depthwise_conv.phase_split_macro`), so each window tap of an output row is one
contiguous vector load and each output a ``kh * kw``-way max in registers.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.script import tirx as T

from .depthwise_conv import DepthwiseConv, phase_split_macro

__all__ = ["max_pool_kernel"]


def max_pool_kernel(geometry: DepthwiseConv, *, lanes: int = 16) -> tvm.tirx.PrimFunc:
    """``X (1, c, h, w) -> Z (1, c, oh, ow)``: the max over each ``geometry.kernel`` window
    (``geometry``'s stride and padding; padding never wins), see the module doc.

    ``lanes`` is the float32 vector width: each output row is computed ``2 * lanes`` columns at
    a time, the last step shifted back to end at the row's end.
    """
    g = geometry
    c, h, w = g.channels, g.height, g.width
    kh, kw = g.kernel
    s = g.stride
    oh, ow = g.out_hw
    wq = g.phase_hw[1]
    plane = g.phase_hw[0] * wq
    size = s * s * plane
    VL = 2 * lanes  # output columns per step: two vector registers

    def window(Q, y, x):
        """The max of the ``kh * kw`` taps of output ``(y, x)``: contiguous in ``x``."""
        best = None
        for i in range(kh):
            for j in range(kw):
                tap = Q[((i % s) * s + j % s) * plane + (y + i // s) * wq + x + j // s]
                best = tap if best is None else T.max(best, tap)
        return best

    phases = phase_split_macro(geometry, tirx.min_value("float32"))

    @T.macro
    def rows(Q, Z, ch):
        for y in range(oh):
            if ow > VL:
                for xo in range(-(-ow // VL)):
                    x0 = T.meta_var(T.min(xo * VL, ow - VL))
                    for xi in T.vectorized(VL):
                        Z[0, ch, y, x0 + xi] = window(Q, y, x0 + xi)
            else:
                for x in T.vectorized(ow):
                    Z[0, ch, y, x] = window(Q, y, x)

    @T.prim_func
    def max_pool(X: T.Buffer((1, c, h, w), "float32"), Z: T.Buffer((1, c, oh, ow), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for ch in T.parallel(c):
            Q = T.alloc_buffer((size,), "float32")
            phases(X, Q, ch)
            rows(Q, Z, ch)

    return max_pool
