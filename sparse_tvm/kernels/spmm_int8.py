"""int8 block-sparse matrix product on AVX-512 VNNI (16x4 blocks, one ``vpdpbusd`` each) and
Arm dotprod (four ``sdot`` a block).

``Y[m, n] = scale[n] * (sum_k X[m, k] * W[n, k] - correction[n]) + bias[n]`` (float32 out)

for uint8 activations ``X`` (``m x k``, row-major) and a symmetric int8 weight ``W`` (``n x k``)
stored as nonzero blocks of 16 output features x 4 consecutive input features: what one
``vpdpbusd`` (``llvm.x86.avx512.vpdpbusd.512``) multiplies. Each of its 16 int32 lanes adds
the dot product of 4 unsigned bytes with 4 signed bytes; the 4 bytes of ``X`` row ``m`` at the
block's column quad are one dword of ``X``, broadcast to every lane, and the block's 64 weight
bytes are one register (lane ``i``: the 4 weights of output feature ``n0 + i``). 64
multiply-adds an instruction against a float32 FMA's 16.

int8 activations (symmetric, ``Int8Spec.x_signed``) are read as uint8 ``X + 128`` (each
byte's sign bit flipped as the dword is broadcast), their zero point 128 higher. On Arm
(``isa="sdot"``, Armv8.2 dotprod: 4 int32 lanes, both operands signed) a block is four
``sdot`` of 4 output features each, and uint8 X is read as ``X - 128`` (:func:`x_offset`).
``correction[n] = x_zero_point * sum_k W[n, k]`` takes the activations' zero point out (the
weights' is 0: symmetric), ``scale[n]`` is the activation scale times the weight's (per
tensor or per channel); bias and ReLU come after. The int32 sums are exact: the result is
onnxruntime's ``MatMulInteger`` followed by its float scaling.

One parallel task per (block row, tile of ``m_tile`` rows of X), a block row's tiles
consecutive (its blocks stay in cache on one core; ``order`` 1: a tile's block rows), with
``m_tile`` int32 accumulator registers
(16 by default, with the weight register and a broadcast under AVX-512's 32). A last short
tile clamps its rows to the last one (recomputed, the same values stored).

``compile`` runs it for the layers of a quantized model whose operands are int8
(``analysis/quantized.py``) on a target with VNNI, where it is measured faster than the float
path (``decision/int8_decision.py``). ``benchmarks/bench_int8.py``, BERT FFN
layers at M = 128, 90 % in 16x4 blocks, 2 Zen 4 cores: up 153 us, down 120 us, against
sparse-tvm's float32 16x1 kernel on the same weight 288 / 325 us and onnxruntime's dense int8
971 / 809 us. A weight pruned in 16x1 blocks pads to 3.5x its blocks in 16x4 (315 us, slower
than float32 on ffn.up): that pattern needs four of a block row's 16x1 blocks packed into one
register, X's four bytes gathered to match. The floor is the float32 output: the kernel with
an empty weight takes 86 us, storing 1.5 MB of Y. With ``out_zero`` the output is requantized
in the kernel to uint8 (a quarter of the stores; what the next int8 layer reads): ffn.up 141
-> 121 us in one run, 2.24x the float32 kernel (272 us); ffn.down, 768 wide, 104 -> 103 us.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

from sparse_tvm.kernels.fast_gelu import gelu

__all__ = [
    "ISAS",
    "DotIsa",
    "Int8Blocks",
    "Int8Spec",
    "Int8Tail",
    "int8_blocks",
    "int8_blocks_fit",
    "int16_pairs",
    "int8_spmm_kernel",
    "smull_quads",
    "weight_layout",
    "x_offset",
]

LANES = 16  # int32 lanes of a zmm register: the block's output features
QUAD = 4  # bytes a vpdpbusd lane sums: the block's input features
VNNI = "llvm.x86.avx512.vpdpbusd.512"


@dataclass(frozen=True)
class DotIsa:
    """A 4-byte dot-product instruction: ``lanes`` int32 lanes, each adding the products of
    4 bytes of X (unsigned or signed) with 4 signed bytes of W."""

    name: str
    lanes: int
    intrinsic: str
    unsigned_x: bool
    m_tile: int  # rows of X a task keeps in accumulators (x 16 / lanes registers each)
    # how the block's 64 weights are stored (:func:`weight_layout`): "quads" (lane i: the 4
    # weights of row i), "pairs16" (AVX2's vpmaddwd: 2 products a lane, no saturation: the
    # weights widened, (w0, w1) and (w2, w3) per lane, two instructions), "smull" (NEON
    # without dotprod: per 4 rows, (w0, w1) of each row then (w2, w3), int8)
    layout: str = "quads"
    # X widened to int16 (m x k) before the kernel (a cast the lowering emits): a pair of
    # columns is one int32 word, broadcast from memory (AVX2: no shifts and masks a block)
    x_wide: bool = False

    @property
    def pairs(self) -> bool:
        """Whether the weights are stored widened to 16-bit pairs (twice the bytes)."""
        return self.layout == "pairs16"


ISAS = {
    # x86 AVX-512 VNNI: u8 x s8, 16 lanes: a 16x4 block is one instruction
    "vnni": DotIsa("vnni", 16, VNNI, True, 16),
    # Armv8.2 dotprod: s8 x s8, 4 lanes: a 16x4 block is four (16 accumulators at 4 rows)
    "sdot": DotIsa("sdot", 4, "llvm.aarch64.neon.sdot.v4i32.v16i8", False, 4),
    # AVX2 without VNNI: vpmaddwd (s16 x s16 pairs into 8 int32 lanes) on the weights widened
    # to 16 bits and X's bytes as 16-bit pairs: exact (vpmaddubsw, u8 x s8, saturates at
    # 2 x 255 x 127); a 16x4 block is four (8 accumulators at 4 rows)
    "avx2": DotIsa("avx2", 8, "llvm.x86.avx2.pmadd.wd", True, 4, layout="pairs16", x_wide=True),
    # Armv8.0 NEON (Cortex-A53/A72, Raspberry Pi 3/4): smull + smlal of 8 int8 pairs into
    # int16 (two products a lane), sadalp into 4 int32 lanes: 12 instructions a 16x4 block
    # (:func:`_smull_group`), s8 x s8 like sdot
    "smlal": DotIsa("smlal", 4, "llvm.aarch64.neon.smull.v8i16", False, 4, layout="smull"),
}


def int16_pairs(data: np.ndarray) -> np.ndarray:
    """:class:`Int8Blocks` data (a block: 16 lanes of 4 int8 weights) as the ``pairs`` ISAs
    read it: per block, the 16 lanes' ``(w0, w1)`` as int16 pairs, then their ``(w2, w3)``
    (int32 words, twice the bytes)."""
    quads = np.asarray(data, np.int32).view(np.int8).reshape(-1, LANES, QUAD).astype(np.int16)
    pairs = np.stack([quads[:, :, 0:2], quads[:, :, 2:4]], axis=1)  # (blocks, 2, 16, 2)
    return np.ascontiguousarray(pairs).reshape(-1).view(np.int32)


def smull_quads(data: np.ndarray) -> np.ndarray:
    """:class:`Int8Blocks` data as the ``smull`` ISA reads it: per block and group of 4 rows,
    8 bytes ``(w0, w1)`` of each row, then 8 bytes ``(w2, w3)`` (the same bytes, reordered):
    ``smull`` of the first 8 with X's ``(x0, x1)`` repeated gives each row's two products in
    adjacent int16 lanes, ``smlal`` of the next 8 with ``(x2, x3)`` adds the other two, and
    ``sadalp`` sums each adjacent pair into the row's int32 lane."""
    quads = np.asarray(data, np.int32).view(np.int8).reshape(-1, LANES // 4, 4, QUAD)
    halves = np.stack([quads[..., 0:2], quads[..., 2:4]], axis=2)  # (blocks, 4, 2, 4, 2)
    return np.ascontiguousarray(halves).reshape(-1).view(np.int32)


def weight_layout(isa: str, data: np.ndarray) -> np.ndarray:
    """:class:`Int8Blocks` data laid out for ``isa``'s kernel (:attr:`DotIsa.layout`)."""
    layout = ISAS[isa].layout
    if layout == "pairs16":
        return int16_pairs(data)
    if layout == "smull":
        return smull_quads(data)
    return np.asarray(data, np.int32)


def x_offset(isa: str, x_signed: bool) -> int:
    """What the kernel adds to X to give the instruction the bytes it multiplies: VNNI reads
    int8 X as X + 128, sdot reads uint8 X as X - 128 (each byte's sign bit flipped); the
    zero-point correction takes ``x_zero + x_offset`` out. X widened to int16 (AVX2) is read
    as it is."""
    if ISAS[isa].x_wide:
        return 0
    if ISAS[isa].unsigned_x:
        return 128 if x_signed else 0
    return 0 if x_signed else -128


_SIGN_BITS = -0x7F7F7F80  # 0x80808080 as int32: XOR flips each byte's sign bit (x + 128)


@dataclass(frozen=True)
class Int8Blocks:
    """An int8 weight in 16x4 blocks as the kernel reads it."""

    data: np.ndarray  # (blocks * 16,) int32: block b, lane i = the 4 weights of row 16 br + i
    indices: np.ndarray  # (blocks,) int32: the block's column quad (first column / 4)
    indptr: np.ndarray  # (n / 16 + 1,) int32: the blocks of block row br
    row_sums: np.ndarray  # (n,) int32: sum_k W[n, k]
    # some weight is -128: two such products overflow an int16 lane (the smull ISA then
    # widens each product on its own)
    full_range: bool = False
    isa: str = "vnni"  # the kernel's ISA: how the weights are laid out (weight_layout)

    is_int8 = True  # DenseToSparse: the kernel reads the layer's 8-bit activations

    @property
    def blocks(self) -> int:
        return int(self.indptr[-1])

    @property
    def block(self) -> tuple[int, int]:
        """The block shape, (output features, input features)."""
        return (LANES, QUAD)

    @property
    def nbytes(self) -> int:
        """Bytes stored: the blocks' values as ``isa`` lays them out (AVX2: widened to 16
        bits) and the int32 indices."""
        value_bytes = 2 if ISAS[self.isa].pairs else 1
        return int(self.blocks * LANES * QUAD * value_bytes + 4 * (self.blocks + self.indptr.size))


def int8_blocks_fit(n: int, k: int) -> bool:
    """Whether an (n, k) weight can be stored in 16x4 blocks: n a multiple of 16, k of 4."""
    return n % LANES == 0 and k % QUAD == 0


def int8_blocks(w: np.ndarray) -> Int8Blocks:
    """``w`` (``n x k`` int8, ``n`` a multiple of 16 and ``k`` of 4) in 16x4 blocks: every
    block with a nonzero kept whole (its zeros stored)."""
    w = np.asarray(w)
    if w.dtype != np.int8 or w.ndim != 2:
        raise ValueError(f"the weight must be a 2-d int8 array, not {w.ndim}-d {w.dtype}")
    n, k = w.shape
    if n % LANES or k % QUAD:
        raise ValueError(f"16x4 blocks need n a multiple of 16 and k of 4, not {n}x{k}")
    blocks = w.reshape(n // LANES, LANES, k // QUAD, QUAD).transpose(0, 2, 1, 3)
    nonzero = blocks.any(axis=(2, 3))  # (block rows, quads)
    rows, quads = np.nonzero(nonzero)
    data = np.ascontiguousarray(blocks[rows, quads]).view(np.int32).reshape(-1)
    indptr = np.zeros(n // LANES + 1, np.int32)
    np.cumsum(nonzero.sum(axis=1), out=indptr[1:])
    indices = quads.astype(np.int32)
    if data.size == 0:  # a kernel argument needs an element
        data, indices = np.zeros(LANES, np.int32), np.zeros(1, np.int32)
    row_sums = w.astype(np.int32).sum(axis=1).astype(np.int32)
    return Int8Blocks(data, indices, indptr, row_sums, bool((w == -128).any()))


@dataclass(frozen=True)
class Int8Tail:
    """Float ops after the requantized output, computed in the epilogue (a QDQ model's
    ``dequantize -> [bias] -> [activation] -> [quantize]``, ``analysis.quantized.QdqTail``):
    the output's dequantize by ``scale`` (its zero point is ``Int8Spec.out_zero``), plus the
    ``tail_bias`` argument, ReLU / ReLU6 / GELU, then a ``quantize`` by ``requant`` ((scale,
    zero point, signed): ``x / scale`` (times its reciprocal) rounded half to even) or float32
    out."""

    scale: float
    relu: bool = False
    relu6: bool = False
    gelu: bool = False
    requant: tuple[float, int, bool] | None = None


@dataclass(frozen=True)
class Int8Spec:
    """What the kernel is specialised on."""

    n: int
    k: int
    m: int
    blocks: int
    relu: bool = False
    out_zero: int | None = None  # a uint8 output with this zero point (None: float32 out)
    m_tile: int | None = None
    x_signed: bool = False  # X is int8 (symmetric activations), read as uint8 X + 128
    out_signed: bool = False  # with out_zero: an int8 output instead of uint8
    tail: Int8Tail | None = None  # with out_zero: the float ops after it (then a tail_bias)
    isa: str = "vnni"  # the dot-product instruction (ISAS); m_tile None: the ISA's
    full_range: bool = False  # Int8Blocks.full_range (the smull ISA: no int16 pair sums)
    # the tasks' order (a tuning knob): 0, a block row's tiles of X consecutive (its blocks
    # stay in cache on one core); 1, a tile's block rows consecutive (its rows of X do)
    order: int = 0

    @property
    def out_dtype(self) -> str:
        """The dtype of ``Y``."""
        if self.out_zero is None:
            return "float32"
        if self.tail is not None:
            if self.tail.requant is None:
                return "float32"
            return "int8" if self.tail.requant[2] else "uint8"
        return "int8" if self.out_signed else "uint8"


def int8_spmm_kernel(spec: Int8Spec) -> tvm.tirx.PrimFunc:
    """The kernel; parameters ``X`` (m, k) uint8 (int8: ``x_signed``), ``data`` / ``indices`` /
    ``indptr`` (:class:`Int8Blocks`), ``correction`` (n,) int32, ``scale`` (n,) float32,
    ``bias`` (n,) float32, ``tail_bias`` (n,) float32 (read with a tail only), ``Y`` (m, n)
    of ``spec.out_dtype``: float32, or 8-bit with ``spec.out_zero`` set: then ``scale`` and
    ``bias`` are in steps of the output (divided by its scale), the requantization fused
    (module doc), and a tail's ops after it (:class:`Int8Tail`)."""
    n, k, m, L = spec.n, spec.k, spec.m, LANES
    if n % L or k % QUAD:
        raise ValueError(f"16x4 blocks need n a multiple of 16 and k of 4, not {n}x{k}")
    isa = ISAS[spec.isa]
    vl, parts = isa.lanes, LANES // isa.lanes  # instruction lanes; instructions a block
    mt = max(1, min(spec.m_tile or isa.m_tile, m))
    tiles = -(-m // mt)
    block_rows = n // L
    quads = k // QUAD
    n_blocks = max(spec.blocks, 1)  # (a buffer needs an element)
    n_data = n_blocks * L * (2 if isa.pairs else 1)
    lanes = T.ramp(0, 1, L)
    out_dtype = spec.out_dtype
    if spec.tail is not None and spec.out_zero is None:
        raise ValueError("a tail follows a requantized output: give out_zero")
    x_dtype = "int16" if isa.x_wide else "int8" if spec.x_signed else "uint8"
    half = k // 2  # int32 words (16-bit pairs) of a widened X row

    def x_dword(xq, at):
        """4 bytes of X as the instruction's operand (:func:`x_offset`)."""
        if x_offset(spec.isa, spec.x_signed):
            return T.bitwise_xor(xq[at], T.int32(_SIGN_BITS))
        return xq[at]

    def x_at(row, br, b, indices, indptr):
        """The dword of X row ``row`` (clamped to the last) at block ``b``'s column quad."""
        return T.min(row, m - 1) * quads + indices[indptr[br] + b]

    @T.prim_func
    def spmm_int8(
        X: T.Buffer((m, k), x_dtype),
        data: T.Buffer((n_data,), "int32"),
        indices: T.Buffer((n_blocks,), "int32"),
        indptr: T.Buffer((block_rows + 1,), "int32"),
        correction: T.Buffer((n,), "int32"),
        scale: T.Buffer((n,), "float32"),
        bias: T.Buffer((n,), "float32"),
        tail_bias: T.Buffer((n,), "float32"),
        Y: T.Buffer((m, n), out_dtype),
    ):
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True})
        Xq = T.decl_buffer((m * quads,), "int32", data=X.data)  # a dword: 4 bytes of a row
        Xw = T.decl_buffer((m * half,), "int32", data=X.data)  # widened X: a 16-bit pair
        Yf = T.decl_buffer((m * n,), out_dtype, data=Y.data)
        for task in T.parallel(block_rows * tiles):
            br = T.meta_var(task // tiles if spec.order == 0 else task % block_rows)
            m0 = T.meta_var((task % tiles if spec.order == 0 else task // block_rows) * mt)
            acc = T.alloc_buffer((mt, L), "int32", scope="global")
            for i in T.unroll(mt):
                acc[i, lanes] = T.broadcast(T.int32(0), L) - correction[T.ramp(br * L, 1, L)]
            for b in range(indptr[br + 1] - indptr[br]):
                for i in T.unroll(mt):
                    if isa.pairs:  # AVX2: two vpmaddwd a part
                        for p in T.unroll(parts):
                            at = T.meta_var(2 * x_at(m0 + i, br, b, indices, indptr))
                            w = T.meta_var((indptr[br] + b) * (2 * L) + p * vl)
                            acc[i, T.ramp(p * vl, 1, vl)] = (
                                acc[i, T.ramp(p * vl, 1, vl)]
                                + _pmaddwd(T.broadcast(Xw[at], vl), data[T.ramp(w, 1, vl)], isa)
                                + _pmaddwd(
                                    T.broadcast(Xw[at + 1], vl), data[T.ramp(w + L, 1, vl)], isa
                                )
                            )
                    elif isa.layout == "smull":  # NEON: 3 instructions a 4-row group
                        for p in T.unroll(parts):
                            d = T.meta_var(x_dword(Xq, x_at(m0 + i, br, b, indices, indptr)))
                            w = T.meta_var((indptr[br] + b) * L + p * 4)
                            acc[i, T.ramp(p * vl, 1, vl)] = acc[
                                i, T.ramp(p * vl, 1, vl)
                            ] + _smull_group(
                                d, data[T.ramp(w, 1, 2)], data[T.ramp(w + 2, 1, 2)], spec
                            )
                    else:
                        for p in T.unroll(parts):
                            acc[i, T.ramp(p * vl, 1, vl)] = T.call_llvm_pure_intrin(
                                f"int32x{vl}",
                                isa.intrinsic,
                                acc[i, T.ramp(p * vl, 1, vl)],
                                T.reinterpret(
                                    f"int8x{4 * vl}",
                                    T.broadcast(
                                        x_dword(Xq, x_at(m0 + i, br, b, indices, indptr)), vl
                                    ),
                                ),
                                T.reinterpret(
                                    f"int8x{4 * vl}",
                                    data[T.ramp((indptr[br] + b) * L + p * vl, 1, vl)],
                                ),
                            )
            for i in T.unroll(mt):
                if m0 + i < m:
                    Yf[T.ramp((m0 + i) * n + br * L, 1, L)] = _epilogue(
                        acc[i, lanes],
                        scale[T.ramp(br * L, 1, L)],
                        bias[T.ramp(br * L, 1, L)],
                        tail_bias[T.ramp(br * L, 1, L)],
                        spec,
                    )

    return spmm_int8


def _smull_group(dword, w01, w23, spec: Int8Spec):
    """The 4 int32 sums of a 4-row group of a block (:func:`smull_quads`): ``smull`` of the
    rows' ``(w0, w1)`` bytes with X's ``(x0, x1)`` repeated, plus (``smlal``) that of
    ``(w2, w3)`` with ``(x2, x3)``, pairs summed into int32 (``sadalp``). Two products of
    at most 128 x 127 fit an int16 lane; with a -128 weight (``spec.full_range``) each
    ``smull`` is widened on its own."""
    x01 = T.reinterpret("int8x8", T.broadcast(T.Cast("int16", dword), 4))
    x23 = T.reinterpret("int8x8", T.broadcast(T.Cast("int16", T.shift_right(dword, 16)), 4))
    lo = _smull(T.reinterpret("int8x8", w01), x01)
    hi = _smull(T.reinterpret("int8x8", w23), x23)
    if spec.full_range:
        return _saddlp(lo) + _saddlp(hi)
    return _saddlp(lo + hi)


def _smull(a, b):
    return T.call_llvm_pure_intrin("int16x8", "llvm.aarch64.neon.smull.v8i16", a, b)


def _saddlp(pairs):
    return T.call_llvm_pure_intrin("int32x4", "llvm.aarch64.neon.saddlp.v4i32.v8i16", pairs)


def _pmaddwd(x_pairs, w_pairs, isa: DotIsa):
    """Each int32 lane: the two 16-bit products of its X pair and weight pair, summed."""
    return T.call_llvm_pure_intrin(
        f"int32x{isa.lanes}",
        isa.intrinsic,
        T.reinterpret(f"int16x{2 * isa.lanes}", x_pairs),
        T.reinterpret(f"int16x{2 * isa.lanes}", w_pairs),
    )


def _vector(value, dtype: str):
    return T.broadcast(T.float32(value) if dtype == "float32" else T.int32(value), LANES)


def _steps(y, zero: int, signed: bool, relu: bool):
    """The quantized value of ``y`` (in output steps) less its zero point, in float lanes:
    rounded half to even (``nearbyint``, as QuantizeLinear rounds) and clamped so that, plus
    the zero point, it saturates to [0, 255] ([-128, 127]) [ReLU: not below the zero point].
    Kept in float: the tail dequantizes it next (no integer round trip)."""
    lowest, highest = (-128, 127) if signed else (0, 255)
    low = (max(zero, lowest) if relu else lowest) - zero
    return T.min(T.max(T.nearbyint(y), _vector(low, "float32")), _vector(highest - zero, "float32"))


def _stored(steps, zero: int, signed: bool):
    """:func:`_steps` plus the zero point, as the 8-bit lanes stored."""
    q = T.Cast("int32x16", steps) + _vector(zero, "int32")
    return T.Cast("int8x16" if signed else "uint8x16", q)


def _epilogue(total, scale, bias, tail_bias, spec: Int8Spec):
    """float32: ``total * scale + bias`` [ReLU]; with ``out_zero``: that in output steps,
    quantized (:func:`_steps`); with a tail, that dequantized, plus ``tail_bias``, its
    activation, and its own quantize or float32 (:class:`Int8Tail`)."""
    y = T.Cast("float32x16", total) * scale + bias
    if spec.out_zero is None:
        return T.max(y, _vector(0, "float32")) if spec.relu else y
    steps = _steps(y, spec.out_zero, spec.out_signed, spec.relu)
    tail = spec.tail
    if tail is None:
        return _stored(steps, spec.out_zero, spec.out_signed)
    f = steps * _vector(tail.scale, "float32") + tail_bias
    if tail.relu or tail.relu6:
        f = T.max(f, _vector(0, "float32"))
    if tail.relu6:
        f = T.min(f, _vector(6, "float32"))
    if tail.gelu:
        f = gelu(f)
    if tail.requant is None:
        return f
    scale2, zero2, signed2 = tail.requant
    # times the reciprocal: a division per lane cost the 3072-wide layer 20 us on Zen 4; it
    # may round a value on a half step the other way than the graph's division (rarely)
    inverse = float(np.float32(1) / np.float32(scale2))
    steps2 = _steps(f * _vector(inverse, "float32"), zero2, signed2, False)
    return _stored(steps2, zero2, signed2)
