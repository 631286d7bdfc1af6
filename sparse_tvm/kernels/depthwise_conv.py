"""A depthwise NCHW conv, one channel at a time, on contiguous rows (the direct trick, densely).

A depthwise conv (``groups == channels``, one filter per channel) does ``kh * kw`` FMAs per
output: too little work for a GEMM, so what costs is how the input is read. NCHW keeps one
channel's image contiguous; TVM's generic schedule reads it as gathers where the rows are
short or the stride is 2. This kernel instead takes one channel per parallel iteration:

1. the channel's image is zero-padded into a small flat buffer (it stays in L1/L2), and for
   stride ``s > 1`` split into its ``s * s`` phases ``Q[a, b][r, c] = P[s*r + a, s*c + b]``;
2. every output row is then ``kh * kw`` contiguous vector loads, each times a broadcast weight:
   tap ``(i, j)`` of output ``(y, x)`` reads ``Q[i % s, j % s][y + i // s, x + j // s]``;
3. bias and ReLU / ReLU6 are applied on the way out.

XNNPACK's sparse inference runs its depthwise convs in NCHW the same way (per channel, padded
rows), which lets a sparse CNN stay channels-first from its first to its last layer.

Measured on MobileNet-v1's nine depthwise shapes (2 Xeon threads, AVX-512): see
``benchmarks/conv_layouts.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.script import tirx as T

__all__ = ["ACTIVATIONS", "DepthwiseConv", "depthwise_conv_kernel", "phase_split_macro"]

# The activations the kernel fuses: none, max(x, 0), min(max(x, 0), 6).
ACTIVATIONS = (None, "relu", "relu6")


@dataclass(frozen=True)
class DepthwiseConv:
    """The geometry of a depthwise conv on one NCHW image.

    ``channels, height, width``: the input; ``kernel`` ``(kh, kw)``; ``stride`` (the same in
    both directions); ``padding`` ``(top, left, bottom, right)``.
    """

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    stride: int
    padding: tuple[int, int, int, int]

    @property
    def padded(self) -> tuple[int, int]:
        """``(hp, wp)``: the padded image."""
        top, left, bottom, right = self.padding
        return self.height + top + bottom, self.width + left + right

    @property
    def out_hw(self) -> tuple[int, int]:
        hp, wp = self.padded
        s = self.stride
        return (hp - self.kernel[0]) // s + 1, (wp - self.kernel[1]) // s + 1

    @property
    def phase_hw(self) -> tuple[int, int]:
        """``(hq, wq)``: one phase plane, ``ceil(hp / s) x ceil(wp / s)``; every tap of every
        output falls inside it (``(oh - 1) + (kh - 1) // s <= (hp - 1) // s``)."""
        hp, wp = self.padded
        s = self.stride
        return -(-hp // s), -(-wp // s)


def phase_split_macro(geometry: DepthwiseConv, pad):
    """The TVMScript macro ``phases(X, Q, ch)``: channel ``ch`` of ``X`` (1, c, h, w) padded with
    ``pad`` (a float32 expression) into ``Q`` (``stride ** 2 * hq * wq`` floats), split into its
    ``stride ** 2`` phase planes (one plane, the padded image, at stride 1); see the module
    doc. Shared by the depthwise conv and the max pool (:mod:`.max_pool`)."""
    g = geometry
    h, w = g.height, g.width
    s = g.stride
    top, left = g.padding[0], g.padding[1]
    hq, wq = g.phase_hw
    plane = hq * wq
    size = s * s * plane
    right = wq - left - w  # stride 1: the right padding (wq == wp)

    @T.macro
    def phases(X, Q, ch):
        # Q[(a * s + b) * plane + r * wq + col] = P[s * r + a, s * col + b], P the padded image
        if s == 1:  # one plane, the padded image: each row's input part one vector copy
            for r in range(hq):
                y = T.meta_var(r - top)
                if y >= 0 and y < h:
                    for col in T.vectorized(w):
                        Q[r * wq + left + col] = X[0, ch, y, col]
                    if left > 0:  # (parse-time tests: a vectorized loop may not be empty)
                        for col in T.vectorized(left):
                            Q[r * wq + col] = pad
                    if right > 0:
                        for col in T.vectorized(right):
                            Q[r * wq + left + w + col] = pad
                else:
                    for col in T.vectorized(wq):
                        Q[r * wq + col] = pad
        else:
            # the padding value first, then each image element to its phase: a serial loop
            # over pairs of columns, which LLVM's loop vectoriser turns into wide loads and
            # shuffles (TVM's own vectorisation of a stride-s read loads lane by lane)
            for i in T.vectorized(size):
                Q[i] = pad
            for yy in range(h):
                a = T.meta_var((yy + top) % s)
                r = T.meta_var((yy + top) // s)
                for k in range(w // s):
                    for t in T.unroll(s):
                        b = T.meta_var((t + left) % s)
                        col = T.meta_var(k + (t + left) // s)
                        Q[(a * s + b) * plane + r * wq + col] = X[0, ch, yy, k * s + t]
                for t in range(w % s):
                    xx = T.meta_var(w // s * s + t)
                    b = T.meta_var((xx + left) % s)
                    Q[(a * s + b) * plane + r * wq + (xx + left) // s] = X[0, ch, yy, xx]

    return phases


def depthwise_conv_kernel(
    geometry: DepthwiseConv, *, activation: str | None, lanes: int = 16
) -> tvm.tirx.PrimFunc:
    """``(X (1, c, h, w), W (c, 1, kh, kw), B (c,)) -> Z (1, c, oh, ow)``, see the module doc
    (a conv without a bias passes zeros: one add per output, against ``kh * kw`` FMAs).

    ``activation`` is one of :data:`ACTIVATIONS`; ``lanes`` the float32 vector width (each
    output row is computed ``2 * lanes`` columns at a time, the last step shifted back to end
    at the row's end).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
    g = geometry
    c, h, w = g.channels, g.height, g.width
    kh, kw = g.kernel
    s = g.stride
    oh, ow = g.out_hw
    plane = g.phase_hw[0] * g.phase_hw[1]
    wq = g.phase_hw[1]
    size = s * s * plane
    VL = 2 * lanes  # output columns per step: two vector registers

    def taps(Q, Wt, ch, y, x):
        """The ``kh * kw`` products of output ``(y, x)``: contiguous in ``x`` for each tap."""
        total = None
        for i in range(kh):
            for j in range(kw):
                index = ((i % s) * s + j % s) * plane + (y + i // s) * wq + x + j // s
                term = Wt[ch, 0, i, j] * Q[index]
                total = term if total is None else total + term
        return total

    def epilogue(value, B, ch):
        value = value + B[ch]
        if activation is not None:
            value = T.max(value, T.float32(0))
        if activation == "relu6":
            value = T.min(value, T.float32(6))
        return value

    phases = phase_split_macro(geometry, T.float32(0))

    @T.macro
    def rows(Q, Wt, B, Z, ch):
        for y in range(oh):
            if ow > VL:
                for xo in range(-(-ow // VL)):
                    x0 = T.meta_var(T.min(xo * VL, ow - VL))
                    for xi in T.vectorized(VL):
                        Z[0, ch, y, x0 + xi] = epilogue(taps(Q, Wt, ch, y, x0 + xi), B, ch)
            else:
                for x in T.vectorized(ow):
                    Z[0, ch, y, x] = epilogue(taps(Q, Wt, ch, y, x), B, ch)

    @T.prim_func
    def depthwise(
        X: T.Buffer((1, c, h, w), "float32"),
        Wt: T.Buffer((c, 1, kh, kw), "float32"),
        B: T.Buffer((c,), "float32"),
        Z: T.Buffer((1, c, oh, ow), "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for ch in T.parallel(c):
            Q = T.alloc_buffer((size,), "float32")
            phases(X, Q, ch)
            rows(Q, Wt, B, Z, ch)

    return depthwise
