"""Scaled dot-product attention in one kernel: ``softmax(Q K^T * scale + mask) V`` per head.

What an encoder's attention costs unfused (all-MiniLM-L6, seq 128, 12 heads of 32): the
query / key / value head transposes, ``Q K^T`` with its scale and mask, the softmax and ``P V``,
each a kernel that writes its result to memory for the next to read back, 256 us a layer on 2
Zen 4 cores, a third of the 90 %-sparse model. Here one parallel task takes a block of query
rows of one head:

1. the head's keys are transposed once into a ``(dim, keys)`` scratch (the task's only
   transpose: queries, values and the output are read and written in the layout they come
   in, ``BSHD`` straight from the projection or ``BHSD``);
2. ``Q K^T`` in register tiles of ``q_tile`` rows by ``key_vectors`` vectors of keys (the
   queries broadcast, the transposed keys contiguous), scaled and masked on the way out;
3. each row's softmax in place (lane-wise partial max and sum, ``fast_exp``);
4. ``P V`` in tiles of ``v_tile`` rows by the head dimension, divided by the row sums, stored
   in the output's layout.

Fused, the same attention takes 171 us, most of it the two products' FMAs (Zen 4 issues one
16-lane FMA a cycle per core). The scores of a block stay in a ``(rows, keys)`` scratch in
cache; the register tiles and the softmax's partial vectors are "global" allocations (LLVM
allocas, once per task; "local" ones were workspace allocations: 188 -> 180 us). The last
block of a head may be short: its rows are clamped to the head's last row (recomputed, the
same values stored), so no loop has a guard.

Layouts name a 4-d buffer's axes: ``B`` batch, ``H`` heads, ``S`` tokens, ``D`` head dimension
(``BHDS``: keys already transposed). The additive mask may be of any shape that broadcasts to
``(batch, heads, queries, keys)``; the scale is a float32 scalar tensor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import tirx
from tvm.script import tirx as T

from .fast_exp import fast_exp

__all__ = ["AttentionKnobs", "AttentionSpec", "attention_kernel", "default_attention_knobs"]

LAYOUTS = ("BSHD", "BHSD")
KEY_LAYOUTS = ("BSHD", "BHSD", "BHDS")


@dataclass(frozen=True)
class AttentionSpec:
    """One attention's shapes and layouts (see the module doc)."""

    batch: int
    heads: int
    queries: int
    keys: int
    dim: int
    q_layout: str = "BSHD"
    k_layout: str = "BSHD"
    v_layout: str = "BSHD"
    out_layout: str = "BSHD"
    mask_shape: tuple[int, int, int, int] = (1, 1, 1, 1)
    lanes: int = 16

    def __post_init__(self) -> None:
        for name in ("q_layout", "v_layout", "out_layout"):
            if getattr(self, name) not in LAYOUTS:
                raise ValueError(f"{name} must be one of {LAYOUTS}, not {getattr(self, name)}")
        if self.k_layout not in KEY_LAYOUTS:
            raise ValueError(f"k_layout must be one of {KEY_LAYOUTS}, not {self.k_layout}")
        full = (self.batch, self.heads, self.queries, self.keys)
        if len(self.mask_shape) != 4 or any(
            m not in (1, f) for m, f in zip(self.mask_shape, full, strict=True)
        ):
            raise ValueError(f"mask shape {self.mask_shape} does not broadcast to {full}")

    def shape(self, layout: str, tokens: int) -> tuple[int, ...]:
        """The buffer shape of a ``layout`` tensor with ``tokens`` tokens."""
        size = {"B": self.batch, "H": self.heads, "S": tokens, "D": self.dim}
        return tuple(size[axis] for axis in layout)


@dataclass(frozen=True)
class AttentionKnobs:
    """``rows``: query rows per parallel task; ``q_tile`` x ``key_vectors``: the ``Q K^T``
    register tile (rows x vectors of keys); ``v_tile``: rows of the ``P V`` tile."""

    rows: int
    q_tile: int = 4
    key_vectors: int = 4
    v_tile: int = 8


def default_attention_knobs(spec: AttentionSpec, cores: int = 2) -> AttentionKnobs:
    """Whole heads per task while that gives each core 4 tasks or more (the keys transposed
    once per head), else blocks halved down to 16 rows; 4 x 4 ``Q K^T`` tiles; ``P V`` tiles
    of 8 rows for heads of up to two vectors, else 4 (16 accumulators either way: 12 heads of
    64, 128 tokens, 333 us against 345 us with 8 rows on Zen 4)."""
    rows = spec.queries
    while spec.batch * spec.heads * -(-spec.queries // rows) < 4 * cores and rows > 16:
        rows = -(-rows // 2)
    v_tile = 8 if -(-spec.dim // spec.lanes) <= 2 else 4
    return AttentionKnobs(rows=rows, v_tile=v_tile)


def _at(layout: str, b, h, s, d) -> tuple:
    index = {"B": b, "H": h, "S": s, "D": d}
    return tuple(index[axis] for axis in layout)


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def attention_kernel(spec: AttentionSpec, knobs: AttentionKnobs | None = None) -> tirx.PrimFunc:
    """``(Q, K, V, mask, scale) -> Out``: ``softmax(Q K^T * scale + mask, keys) V`` per batch and
    head, in ``spec``'s layouts (module doc)."""
    knobs = knobs or default_attention_knobs(spec)
    nb, nh, ns, nt, nd, L = (
        spec.batch, spec.heads, spec.queries, spec.keys, spec.dim, spec.lanes
    )  # fmt: skip
    rows = min(knobs.rows, ns)
    blocks = -(-ns // rows)
    tasks = nb * nh * blocks
    rt, rv = knobs.q_tile, knobs.v_tile
    padded_rows = _round_up(rows, math.lcm(rt, rv))
    width = knobs.key_vectors * L
    full_tiles, tail = divmod(nt, width)
    chunks, rest = divmod(nt, L)
    ql, kl, vl, ol = spec.q_layout, spec.k_layout, spec.v_layout, spec.out_layout
    mb, mh, ms, mt = (size > 1 for size in spec.mask_shape)
    neg_inf = tirx.min_value("float32")

    def mask_at(M, b, h, s, t):
        return M[b if mb else 0, h if mh else 0, s if ms else 0, t if mt else 0]

    def key_at(K, b, h, t, d):
        if kl == "BHDS":
            return K[b, h, d, t]
        return K[_at(kl, b, h, t, d)]

    @T.macro
    def scores(Q, KT, P, M, C, b, h, r0, last, j0, tile_width):
        for i0 in range(padded_rows // rt):
            acc = T.alloc_buffer((rt, tile_width), "float32", scope="global")
            for ii in T.unroll(rt):
                for jj in T.vectorized(tile_width):
                    acc[ii, jj] = T.float32(0)
            for dd in range(nd):
                for ii in T.unroll(rt):
                    for jj in T.vectorized(tile_width):
                        acc[ii, jj] = (
                            acc[ii, jj]
                            + Q[_at(ql, b, h, T.min(r0 + i0 * rt + ii, last), dd)] * KT[dd, j0 + jj]
                        )
            for ii in T.unroll(rt):
                for jj in T.vectorized(tile_width):
                    P[i0 * rt + ii, j0 + jj] = acc[ii, jj] * C[()] + mask_at(
                        M, b, h, T.min(r0 + i0 * rt + ii, last), j0 + jj
                    )

    @T.macro
    def fold_step(part, width, is_max):
        for lane in T.vectorized(width):
            if is_max:
                part[lane] = T.max(part[lane], part[lane + width])
            else:
                part[lane] = part[lane] + part[lane + width]

    @T.macro
    def fold(part, is_max):
        """``part[0]``: the max or sum of ``part``'s ``L`` lanes, halving the vector each step."""
        if L >= 16:
            fold_step(part, 8, is_max)
        if L >= 8:
            fold_step(part, 4, is_max)
        fold_step(part, 2, is_max)
        fold_step(part, 1, is_max)

    @T.macro
    def softmax_row(P, inv, i):
        part = T.alloc_buffer((L,), "float32", scope="global")
        top = T.alloc_buffer((1,), "float32", scope="global")
        for lane in T.vectorized(L):
            part[lane] = neg_inf
        for c in range(chunks):
            for lane in T.vectorized(L):
                part[lane] = T.max(part[lane], P[i, c * L + lane])
        for t in range(rest):
            part[0] = T.max(part[0], P[i, chunks * L + t])
        fold(part, True)
        top[0] = part[0]
        for lane in T.vectorized(L):
            part[lane] = T.float32(0)
        for c in range(chunks):
            for lane in T.vectorized(L):
                P[i, c * L + lane] = fast_exp(P[i, c * L + lane] - top[0])
                part[lane] = part[lane] + P[i, c * L + lane]
        for t in range(rest):
            P[i, chunks * L + t] = fast_exp(P[i, chunks * L + t] - top[0])
            part[0] = part[0] + P[i, chunks * L + t]
        fold(part, False)
        inv[i] = T.float32(1) / part[0]

    @T.macro
    def weighted_values(P, inv, V, Out, b, h, r0, last):
        for i0 in range(padded_rows // rv):
            acc = T.alloc_buffer((rv, nd), "float32", scope="global")
            for ii in T.unroll(rv):
                for dd in T.vectorized(nd):
                    acc[ii, dd] = T.float32(0)
            for t in range(nt):
                for ii in T.unroll(rv):
                    for dd in T.vectorized(nd):
                        acc[ii, dd] = acc[ii, dd] + P[i0 * rv + ii, t] * V[_at(vl, b, h, t, dd)]
            for ii in T.unroll(rv):
                for dd in T.vectorized(nd):
                    Out[_at(ol, b, h, T.min(r0 + i0 * rv + ii, last), dd)] = (
                        acc[ii, dd] * inv[i0 * rv + ii]
                    )

    q_shape = spec.shape(ql, ns)
    k_shape = (nb, nh, nd, nt) if kl == "BHDS" else spec.shape(kl, nt)
    v_shape = spec.shape(vl, nt)
    o_shape = spec.shape(ol, ns)
    m_shape = spec.mask_shape

    @T.prim_func
    def attention(
        Q: T.Buffer(q_shape, "float32"),
        K: T.Buffer(k_shape, "float32"),
        V: T.Buffer(v_shape, "float32"),
        M: T.Buffer(m_shape, "float32"),
        C: T.Buffer((), "float32"),
        Out: T.Buffer(o_shape, "float32"),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        for task in T.parallel(tasks):
            b = T.meta_var(task // (nh * blocks))
            h = T.meta_var(task // blocks % nh)
            r0 = T.meta_var(task % blocks * rows)
            last = T.meta_var(T.min(r0 + rows, ns) - 1)
            KT = T.alloc_buffer((nd, nt), "float32")
            P = T.alloc_buffer((padded_rows, nt), "float32")
            inv = T.alloc_buffer((padded_rows,), "float32")
            for dd in range(nd):
                for t in T.vectorized(nt):
                    KT[dd, t] = key_at(K, b, h, t, dd)
            for j in range(full_tiles):
                scores(Q, KT, P, M, C, b, h, r0, last, j * width, width)
            if tail > 0:
                scores(Q, KT, P, M, C, b, h, r0, last, full_tiles * width, tail)
            for i in range(padded_rows):
                softmax_row(P, inv, i)
            weighted_values(P, inv, V, Out, b, h, r0, last)

    return attention
