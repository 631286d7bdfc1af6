"""int8 kernels for microcontrollers: ``SMLAD`` multiply-adds, the QDQ epilogue, C by TVM.

A quantized model's MatMul / Gemm layer or conv (``Layer.int8``) runs on its 8-bit activations
and int8 weights packed by :mod:`sparse_tvm.micro.int8_weight`: exact int32 sums, two products
per ``SMLAD``; a sparse conv reads its padded input in place (``MicroInt8Spec.direct``,
:mod:`sparse_tvm.micro.conv_patches`) and writes its output channels first. The DSP
instructions come from ``sparse_tvm_micro.h`` (``stvm_smlad``,
``stvm_sxtb16``, ``stvm_sxtb16_ror8``, ``stvm_pack16``): the ACLE intrinsics where the core has
the DSP extension (Cortex-M4 / M7 / M33 / M55), plain C with the same results elsewhere
(Cortex-M3, the host build), so a project is bit-exact on every core.

Epilogue per output (one float step at a time, as the QDQ graph computes it)::

    y = fmaf((float)acc, scale[n], bias[n])      [ReLU]   (acc starts at -correction[n])
    -> float32 out, or in the output quantize's steps: round half to even, saturate, [+ the
       QDQ tail: dequantize, + tail bias, ReLU / ReLU6, quantize by division] -> 8-bit out

``fmaf`` (one rounding) so that cores with and without a fused multiply-add agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm.script import tirx as T

from sparse_tvm.analysis.layers import ConvGeometry
from sparse_tvm.micro.conv_patches import padded_shape, patch_bases
from sparse_tvm.micro.int8_weight import MicroInt8Weight
from sparse_tvm.micro.integer_tail import IntegerTail, tail_bounds
from sparse_tvm.micro.kernels import column_decoder

__all__ = [
    "MicroInt8Spec",
    "MicroTail",
    "blob_layout",
    "micro_int8_kernel",
    "pack_blob",
    "quantized_value",
]

_ATTRS = {"tirx.is_scheduled": True, "tirx.noalias": True}


@dataclass(frozen=True)
class MicroTail:
    """The QDQ tail after the output quantize (``analysis.quantized.QdqTail``): dequantize by
    ``scale``, + ``tail_bias``, ReLU / ReLU6, then a quantize ``(scale, zero, signed)`` or
    float32."""

    scale: float
    relu: bool = False
    relu6: bool = False
    requant: tuple[float, int, bool] | None = None
    # the same tail in fixed point where that is exact (a requantizing tail only); with a
    # tail bias, the blob's ``tail_bias`` field holds its offsets (int32)
    integer: IntegerTail | None = None


@dataclass(frozen=True)
class MicroInt8Spec:
    """What the kernel is specialised on (the arrays' presence included: flash is the
    budget, so a zero correction or bias is not stored)."""

    m: int
    x_signed: bool = False
    correction: bool = True  # subtract correction[n] (activations with a zero point)
    bias: bool = False
    relu: bool = False
    out_zero: int | None = None  # 8-bit output in the quantize's steps (None: float32)
    out_signed: bool = False
    tail: MicroTail | None = None
    tail_bias: bool = False
    # a conv read directly (sparse only): X is its padded input, flat, and the weight's
    # indices are offsets into it (sparse_tvm.micro.conv_patches)
    direct: ConvGeometry | None = None
    # a conv's output written channels first, (batch, n, pixels), rows being (batch, pixel)
    pixels: int | None = None

    @property
    def out_dtype(self) -> str:
        if self.out_zero is None or (self.tail is not None and self.tail.requant is None):
            return "float32"
        signed = self.tail.requant[2] if self.tail is not None else self.out_signed
        return "int8" if signed else "uint8"


def _ext(dtype: str, name: str, *args):
    return T.call_extern(dtype, name, *args)


def _smlad(a, b, acc):
    return _ext("int32", "stvm_smlad", a, b, acc)


def _pair(X, row, cols, e: int, direct: bool):
    """The activations of columns ``cols[e]``, ``cols[e + 1]`` of ``row`` as one half-word
    pair; ``direct``: ``row`` is the pixel's offset into the flat padded input."""
    if direct:
        lo, hi = X[row + cols[e]], X[row + cols[e + 1]]
    else:
        lo, hi = X[row, cols[e]], X[row, cols[e + 1]]
    return _ext("int32", "stvm_pack16", T.Cast("int32", lo), T.Cast("int32", hi))


def _range(signed: bool) -> tuple[int, int]:
    return (-128, 127) if signed else (0, 255)


def quantized_value(y, zero: int, signed: bool, low: int | None = None, high: int | None = None):
    """``y`` (in output steps) rounded half to even plus ``zero``, saturated to the 8-bit
    range, or to ``[low, high]`` inside it (an activation as a clamp of the quantized value:
    rounding is monotone and keeps 0, so ``q(max(f, 0)) = max(q(f), zero)``); an int32."""
    lowest, highest = _range(signed)
    low = lowest if low is None else max(low, lowest)
    high = highest if high is None else min(high, highest)
    q = _ext("int32", "stvm_rint", y) + zero
    return T.min(T.max(q, low), high)


def _scaled(x, scale, bias):
    """``x * scale + bias`` rounded once (``fmaf``), or ``x * scale`` without a bias (the
    same value: no register copy of a zero addend)."""
    return x * scale if bias is None else _ext("float32", "fmaf", x, scale, bias)


def _epilogue_value(total, s, b, tb, spec: MicroInt8Spec):
    """Expression of the stored value from the corrected int32 sum ``total`` and the output's
    ``scale`` / ``bias`` / ``tail bias`` values (float expressions; None: no bias)."""
    y = _scaled(T.Cast("float32", total), s, b)
    if spec.out_zero is None:
        return T.max(y, T.float32(0)) if spec.relu else y
    zero, signed = spec.out_zero, spec.out_signed
    q = quantized_value(y, zero, signed, zero if spec.relu else None)
    tail = spec.tail
    if tail is None:
        return T.Cast("int8" if signed else "uint8", q)
    if tail.integer is not None:  # exact in fixed point (integer_tail): MLA + USAT
        fixed = tail.integer
        offset = tb if fixed.offset is None else T.int32(fixed.offset)
        low, high = tail_bounds(tail)
        v = T.shift_right(q * T.int32(fixed.multiplier) + offset, T.int32(fixed.shift))
        signed2 = tail.requant[2]
        if (low, high) == _range(signed2):  # USAT / SSAT, with the shift as its operand
            clamped = _ext("int32", "stvm_ssat8" if signed2 else "stvm_usat8", v)
        else:
            clamped = T.min(T.max(v, low), high)
        return T.Cast("int8" if signed2 else "uint8", clamped)
    f = _scaled(T.Cast("float32", q - zero), T.float32(tail.scale), tb)
    if tail.requant is None:
        if tail.relu or tail.relu6:
            f = T.max(f, T.float32(0))
        return T.min(f, T.float32(6)) if tail.relu6 else f
    scale2, zero2, signed2 = tail.requant
    low, high = tail_bounds(tail)
    q2 = quantized_value(f / T.float32(scale2), zero2, signed2, low, high)
    return T.Cast("int8" if signed2 else "uint8", q2)


_SECTIONS = ("data", "rows", "indptr", "indices")
# the per-output-row values, one record a row (the fields the spec has, 4 bytes each): the
# epilogue reads them at small offsets of one pointer (Thumb-2's VLDR reaches 1020 bytes,
# so separate arrays behind a large weight cost an address add per value)
_ROW_FIELDS = ("corr", "scale", "bias", "tail_bias")
_ROW_DTYPES = {"corr": "int32", "scale": "float32", "bias": "float32", "tail_bias": "float32"}


def _row_dtype(name: str, spec: MicroInt8Spec) -> str:
    """A per-row field's dtype: a fixed-point tail's per-row offsets are int32."""
    if name == "tail_bias" and spec.tail is not None and spec.tail.integer is not None:
        return "int32"
    return _ROW_DTYPES[name]


def _section_bytes(dtype: str, length: int) -> int:
    return -(-length * np.dtype(dtype).itemsize // 4) * 4


def padded_rows(weight: MicroInt8Weight) -> int:
    """Output rows the kernel's loops run over: whole blocks (sparse), pairs (dense)."""
    n = weight.shape[0]
    return n + n % 2 if weight.dense else weight.block_rows * weight.r


def blob_layout(
    weight: MicroInt8Weight, spec: MicroInt8Spec
) -> dict[str, tuple[str, int, int, int]]:
    """Where each of the kernel's arrays lies in its one constant blob: ``name -> (dtype,
    length, byte offset, stride in elements)``, 4-byte aligned, in the order of ``_SECTIONS``
    (the words first); the per-row values (``corr`` stored negated, as each sum's start;
    ``scale``, ``bias``, ``tail_bias``) interleaved as one record a row over
    :func:`padded_rows` (the padding rows zero); the arrays the spec leaves out are absent. One
    blob, not an argument per array: one base pointer in a register for all of them (a
    Cortex-M has a dozen free registers, and arguments past the fourth come on the stack)."""
    rows = padded_rows(weight)
    fields = [
        name
        for name, present in zip(
            _ROW_FIELDS, (spec.correction, True, spec.bias, spec.tail_bias), strict=True
        )
        if present
    ]
    layout, offset = {}, 0
    for section in _SECTIONS:
        if section == "rows":
            for j, name in enumerate(fields):
                layout[name] = (_row_dtype(name, spec), rows, offset + 4 * j, len(fields))
            offset += 4 * len(fields) * rows
            continue
        if section == "data":
            dtype, length = "int32", int(weight.data.shape[0])
        elif weight.dense:
            continue
        else:
            array = weight.indptr if section == "indptr" else weight.indices
            dtype, length = str(array.dtype), int(array.shape[0])
        layout[section] = (dtype, length, offset, 1)
        offset += _section_bytes(dtype, length)
    return layout


def _blob_bytes(layout: dict[str, tuple[str, int, int, int]]) -> int:
    return max(
        offset + _section_bytes(dtype, stride * (length - 1) + 1)
        for dtype, length, offset, stride in layout.values()
    )


def pack_blob(weight: MicroInt8Weight, spec: MicroInt8Spec, arrays: dict) -> np.ndarray:
    """The kernel's arrays by name (``None``: absent; ``corr`` the positive correction) in one
    uint8 blob laid out by :func:`blob_layout`."""
    layout = blob_layout(weight, spec)
    blob = np.zeros(_blob_bytes(layout), np.uint8)
    n = weight.shape[0]
    for name, (dtype, length, offset, stride) in layout.items():
        values = np.ascontiguousarray(arrays[name], dtype).reshape(-1)
        if name not in _ROW_FIELDS:
            raw = values.view(np.uint8)
            if raw.size != length * np.dtype(dtype).itemsize:
                raise ValueError(f"blob section {name}: {raw.size} bytes, not {length} {dtype}")
            blob[offset : offset + raw.size] = raw
            continue
        if values.size != n:
            raise ValueError(f"blob field {name}: {values.size} values, not one per row ({n})")
        if name == "corr":  # each sum starts at -correction
            values = (-values.astype(np.int64)).astype(np.int32)
        field = blob[offset : offset + 4 * (stride * (length - 1) + 1)].view(np.uint32)[::stride]
        field[:n] = values.view(np.uint32)  # the padding rows stay zero
    return blob


def micro_int8_kernel(weight: MicroInt8Weight, spec: MicroInt8Spec) -> tvm.tirx.PrimFunc:
    """``Y (m, n) = epilogue(X (m, k) @ W.T)`` for the packed ``weight`` (module doc).

    Parameters: ``X`` (uint8 / int8), ``blob`` (uint8: the weight's words and indices and the
    epilogue's arrays, :func:`blob_layout`), ``Y``."""
    n, k = weight.shape
    m = spec.m
    x_dtype = "int8" if spec.x_signed else "uint8"
    y_dtype = spec.out_dtype
    layout = blob_layout(weight, spec)
    blob_len = _blob_bytes(layout)

    def view(name: str, dtype: str = "int32"):
        """(shape, dtype, element offset) of a blob section; an absent one is a placeholder
        the body never reads."""
        dtype, length, offset, stride = layout.get(name, (dtype, 1, 0, 1))
        return (stride * (length - 1) + 1,), dtype, offset // np.dtype(dtype).itemsize

    rs = layout["scale"][3]  # elements from one row's record to the next

    def start(corr, row):
        """Where output ``row``'s sum starts: minus its zero-point correction."""
        return corr[row * rs] if spec.correction else 0

    @T.macro
    def store(Y, mi, row, total, corr, scale, bias, tail_bias):
        b = T.meta_var(bias[row * rs] if spec.bias else None)
        tb = T.meta_var(tail_bias[row * rs] if spec.tail_bias else None)
        value = T.meta_var(_epilogue_value(total, scale[row * rs], b, tb, spec))
        if spec.pixels is None:
            Y[mi, row] = value
        else:
            Y[mi // spec.pixels, row, mi % spec.pixels] = value

    body = (_dense_body if weight.dense else _sparse_body)(weight, spec, start, store)
    x_shape = (int(np.prod(padded_shape(spec.direct))),) if spec.direct else (m, k)
    y_shape = (m, n) if spec.pixels is None else (m // spec.pixels, n, spec.pixels)
    v_data, v_indices, v_indptr = view("data"), view("indices", "uint8"), view("indptr")
    word = _delta_words(weight)
    if word is not None:
        g = weight.group
        v_indices = ((max(1, v_indices[0][0] // g),), word, v_indices[2] // g)
    if _dword_groups(weight):  # the words two at a time: one LDRD, one base register
        v_data = ((v_data[0][0] // 2,), "int64", v_data[2] // 2)
    v_corr, v_scale = view("corr"), view("scale", "float32")
    v_bias, v_tail = view("bias", "float32"), view("tail_bias", "float32")

    @T.prim_func
    def kernel(
        X: T.Buffer(x_shape, x_dtype),
        blob: T.Buffer((blob_len,), "uint8"),
        Y: T.Buffer(y_shape, y_dtype),
    ):
        T.func_attr(_ATTRS)
        data = T.decl_buffer(v_data[0], v_data[1], data=blob.data, elem_offset=v_data[2])
        indices = T.decl_buffer(
            v_indices[0], v_indices[1], data=blob.data, elem_offset=v_indices[2]
        )
        indptr = T.decl_buffer(v_indptr[0], v_indptr[1], data=blob.data, elem_offset=v_indptr[2])
        corr = T.decl_buffer(v_corr[0], v_corr[1], data=blob.data, elem_offset=v_corr[2])
        scale = T.decl_buffer(v_scale[0], v_scale[1], data=blob.data, elem_offset=v_scale[2])
        bias = T.decl_buffer(v_bias[0], v_bias[1], data=blob.data, elem_offset=v_bias[2])
        tail_bias = T.decl_buffer(v_tail[0], v_tail[1], data=blob.data, elem_offset=v_tail[2])
        body(X, data, indices, indptr, corr, scale, bias, tail_bias, Y)

    return kernel


def _dense_body(weight: MicroInt8Weight, spec: MicroInt8Spec, start, store):
    """Two output rows at a time over the activation pairs packed once per input row."""
    n, k = weight.shape
    m = spec.m
    words = -(-k // 4)  # words per row
    pairs = 2 * words

    @T.macro
    def body(X, data, indices, indptr, corr, scale, bias, tail_bias, Y):
        for mi in range(m):
            xp = T.alloc_buffer((pairs,), "int32", scope="global")
            for j in range(pairs):
                lo = T.meta_var(
                    T.if_then_else(2 * j < k, T.Cast("int32", X[mi, T.min(2 * j, k - 1)]), 0)
                )
                hi = T.meta_var(
                    T.if_then_else(
                        2 * j + 1 < k, T.Cast("int32", X[mi, T.min(2 * j + 1, k - 1)]), 0
                    )
                )
                xp[j] = _ext("int32", "stvm_pack16", lo, hi)
            for rp in range((n + 1) // 2):
                acc = T.alloc_buffer((2,), "int32", scope="global")
                acc[0] = start(corr, 2 * rp)
                acc[1] = start(corr, 2 * rp + 1)
                for j in range(words):
                    w0 = T.meta_var(data[(2 * rp) * words + j])
                    w1 = T.meta_var(data[(2 * rp + 1) * words + j])
                    a = T.meta_var(xp[2 * j])
                    b = T.meta_var(xp[2 * j + 1])
                    acc[0] = _smlad(_ext("int32", "stvm_sxtb16", w0), a, acc[0])
                    acc[0] = _smlad(_ext("int32", "stvm_sxtb16_ror8", w0), b, acc[0])
                    acc[1] = _smlad(_ext("int32", "stvm_sxtb16", w1), a, acc[1])
                    acc[1] = _smlad(_ext("int32", "stvm_sxtb16_ror8", w1), b, acc[1])
                store(Y, mi, 2 * rp, acc[0], corr, scale, bias, tail_bias)
                if 2 * rp + 1 < n:
                    store(Y, mi, 2 * rp + 1, acc[1], corr, scale, bias, tail_bias)

    return body


def _dword_groups(weight: MicroInt8Weight) -> bool:
    """Whether a sparse weight's groups are whole dwords (``r`` a multiple of 4: ``r / 2``
    words a group), read as int64 (the data section is first in the 8-byte aligned blob)."""
    return not weight.dense and weight.r % 4 == 0


def _delta_words(weight: MicroInt8Weight) -> str | None:
    """The dtype a group's 8-bit column deltas are read as, one little-endian word (one load,
    each column an add of one of its bytes: UXTAB), or None where they are read byte by byte
    (8-bit columns; groups of one or three). Sections start 4-byte aligned, groups are whole."""
    if weight.dense or weight.encoding != "delta8":
        return None
    return {2: "uint16", 4: "uint32"}.get(weight.group)


def _sparse_body(weight: MicroInt8Weight, spec: MicroInt8Spec, start, store):
    """Per block row, the blocks two at a time: one activation pair, ``r`` ``SMLAD`` s."""
    n, _ = weight.shape
    m, r, g = spec.m, weight.r, weight.group
    nbr = weight.block_rows
    _, column = column_decoder(weight)

    direct = spec.direct is not None
    row_of = patch_bases(spec.direct) if direct else (lambda mi: mi)  # what _pair reads

    packed = _delta_words(weight) is not None

    @T.macro
    def group(X, data, indices, mi, grp, acc, col, cols, xp, wd):
        """The ``g`` blocks of group ``grp``: ``r`` (r = 1: 2) ``SMLAD`` s a word."""
        if packed:
            deltas = T.meta_var(T.Cast("int32", indices[grp]))
            for e in T.unroll(g):
                # each byte masked (UXTAB with a rotation; a 32-bit word's int32 can be < 0)
                byte = T.meta_var((deltas >> (8 * e)) & 255)
                col[0] = col[0] + byte
                cols[e] = col[0]
        else:
            for e in T.unroll(g):
                column(col, indices, grp * g + e)
                cols[e] = col[0]
        if r == 1:
            w = T.meta_var(data[grp])
            a = T.meta_var(_pair(X, mi, cols, 0, direct))
            b = T.meta_var(_pair(X, mi, cols, 2, direct))
            acc[0] = _smlad(_ext("int32", "stvm_sxtb16", w), a, acc[0])
            acc[0] = _smlad(_ext("int32", "stvm_sxtb16_ror8", w), b, acc[0])
        elif _dword_groups(weight):  # word 2 * d + 1 of the group: the dword's high half
            xp[0] = _pair(X, mi, cols, 0, direct)
            for d in T.unroll(r // 4):
                wd[0] = data[grp * (r // 4) + d]
                for half in T.unroll(2):
                    w = T.meta_var(T.Cast("int32", wd[0] >> T.Cast("int64", 32 * half)))
                    a = T.meta_var(4 * d + 2 * half)
                    acc[a] = _smlad(_ext("int32", "stvm_sxtb16", w), xp[0], acc[a])
                    acc[a + 1] = _smlad(_ext("int32", "stvm_sxtb16_ror8", w), xp[0], acc[a + 1])
        else:
            xp[0] = _pair(X, mi, cols, 0, direct)
            for h in T.unroll(r // 2):
                w = T.meta_var(data[grp * (r // 2) + h])
                acc[2 * h] = _smlad(_ext("int32", "stvm_sxtb16", w), xp[0], acc[2 * h])
                acc[2 * h + 1] = _smlad(_ext("int32", "stvm_sxtb16_ror8", w), xp[0], acc[2 * h + 1])

    @T.macro
    def body(X, data, indices, indptr, corr, scale, bias, tail_bias, Y):
        for mi, br in T.grid(m, nbr):
            acc = T.alloc_buffer((r,), "int32", scope="global")
            col = T.alloc_buffer((1,), "int32", scope="global")
            cols = T.alloc_buffer((g,), "int32", scope="global")
            xp = T.alloc_buffer((1,), "int32", scope="global")
            wd = T.alloc_buffer((1,), "int64", scope="global")
            pos = T.alloc_buffer((1,), "int32", scope="global")
            left = T.alloc_buffer((1,), "int32", scope="global")
            row = T.alloc_buffer((1,), "int32", scope="global")
            row[0] = row_of(mi)
            for ri in T.unroll(r):
                acc[ri] = start(corr, br * r + ri)
            col[0] = 0
            # a while loop over the groups: the C compiler turns the running group into
            # pointer increments (a normalised for loop re-adds its start at every access;
            # 36 % more instructions), and unrolled twice it ran out of registers (9 % more)
            # counted down: the compiler ends the loop on a pointer compare, no index kept
            pos[0] = T.Cast("int32", indptr[br])
            left[0] = T.Cast("int32", indptr[br + 1]) - pos[0]
            while left[0] > 0:
                left[0] = left[0] - 1
                group(X, data, indices, row[0], pos[0], acc, col, cols, xp, wd)
                pos[0] = pos[0] + 1
            for ri in T.unroll(r):
                if br * r + ri < n:
                    store(Y, mi, br * r + ri, acc[ri], corr, scale, bias, tail_bias)

    return body
