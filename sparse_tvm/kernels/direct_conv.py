"""A stride-1 NCHW conv as one SpMM read straight from its padded input (no im2col).

For stride 1 (and no dilation), the im2col row of input channel ``c`` and kernel tap
``(i, j)`` is the padded input ``P[c]`` shifted by ``(i, j)``. Computed over the padded width
``wp`` (each output row ``wp`` wide, its last ``kw - 1`` columns junk), that row is one
contiguous run of the flat padded input, starting at ``c * hp * wp + i * wp + j``. So a conv
with ``r x 1`` blocks (one column, one tap, per block) is the column-vector SpMM in layout
``"DIRECT"`` with each block's index replaced by that offset: ``Y[o, y * wp + x] = sum_b
data[b] * P[offset[b] + y * wp + x]``. The im2col matrix (``kh * kw`` times the input, 7 MB
for a 3x3 64-channel conv at 56x56) is never written or read; the junk columns cost
``(kw - 1) / wp`` more FMAs (4 % at 56 wide, 29 % at 7) and are cropped away.

:class:`DirectConv` holds the geometry; the lowering pads and flattens the input, calls the
kernel, and crops its ``(1, n, oh * wp)`` output to ``(1, n, oh, ow)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

__all__ = ["DirectConv", "crop_kernel", "pad_flat_kernel"]


@dataclass(frozen=True)
class DirectConv:
    """The geometry of a stride-1 conv as a ``"DIRECT"`` SpMM.

    ``channels, height, width``: the (unpadded) input of one image; ``kernel`` ``(kh, kw)``;
    ``padding`` ``(top, left, bottom, right)``.
    """

    channels: int
    height: int
    width: int
    kernel: tuple[int, int]
    padding: tuple[int, int, int, int]

    @property
    def hp(self) -> int:
        """Padded height."""
        return self.height + self.padding[0] + self.padding[2]

    @property
    def wp(self) -> int:
        """Padded width: the width of the kernel's output grid too."""
        return self.width + self.padding[1] + self.padding[3]

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.hp - self.kernel[0] + 1, self.wp - self.kernel[1] + 1

    @property
    def m(self) -> int:
        """Columns of the SpMM: every output row, ``wp`` wide."""
        return self.out_hw[0] * self.wp

    @property
    def slack(self) -> int:
        """Zeros after the flat padded input: the junk columns of the last output row of the
        last channel's last tap read up to ``kw - 1`` elements past it."""
        return self.kernel[1]

    @property
    def x_size(self) -> int:
        """Elements of the kernel's flat input: the padded image and the slack."""
        return self.channels * self.hp * self.wp + self.slack

    def offsets(self, columns: np.ndarray) -> np.ndarray:
        """The element offset in the flat padded input of each weight column ``(c, i, j)``
        (the (n, k) view of an OIHW weight: ``k = (c * kh + i) * kw + j``), as int32."""
        kh, kw = self.kernel
        columns = np.asarray(columns, np.int64)
        c, tap = np.divmod(columns, kh * kw)
        i, j = np.divmod(tap, kw)
        offsets = c * self.hp * self.wp + i * self.wp + j
        return offsets.astype(np.int32)


def pad_flat_kernel(geometry: DirectConv) -> tvm.tirx.PrimFunc:
    """``X (1, c, h, w) -> P (x_size,)``: the zero-padded image, flat, then the slack zeros;
    parallel over the padded rows, each row's input part one vector copy."""
    g = geometry
    c, h, w, hp, wp = g.channels, g.height, g.width, g.hp, g.wp
    top, left = g.padding[0], g.padding[1]
    right = wp - left - w
    size, body = g.x_size, c * g.hp * g.wp

    @T.prim_func
    def pad_flat(X: T.Buffer((1, c, h, w), "float32"), P: T.Buffer((size,), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for row in T.parallel(c * hp):
            ch = T.meta_var(row // hp)
            y = T.meta_var(row % hp - top)
            base = T.meta_var(row * wp)
            if y >= 0 and y < h:
                for i in T.vectorized(w):
                    P[base + left + i] = X[0, ch, y, i]
                if left > 0:  # (parse-time tests: a vectorized loop may not be empty)
                    for i in T.vectorized(left):
                        P[base + i] = T.float32(0)
                if right > 0:
                    for i in T.vectorized(right):
                        P[base + left + w + i] = T.float32(0)
            else:
                for i in T.vectorized(wp):
                    P[base + i] = T.float32(0)
        for i in T.vectorized(size - body):
            P[body + i] = T.float32(0)

    return pad_flat


def crop_kernel(n: int, geometry: DirectConv) -> tvm.tirx.PrimFunc:
    """``Y (1, n, oh * wp) -> (1, n, oh, ow)``: the direct SpMM's output without the junk
    columns; parallel over the rows, each one vector copy."""
    oh, ow = geometry.out_hw
    wp = geometry.wp

    @T.prim_func
    def crop(Y: T.Buffer((1, n, oh * wp), "float32"), Z: T.Buffer((1, n, oh, ow), "float32")):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for row in T.parallel(n * oh):
            for i in T.vectorized(ow):
                Z[0, row // oh, row % oh, i] = Y[0, row // oh, row % oh * wp + i]

    return crop
