"""A QDQ tail in fixed point, where it is exact: one multiply-add and a saturation an output.

An int8 layer that requantizes and is followed by a QDQ tail (dequantize, + a tail bias,
ReLU / ReLU6, quantize again: ``int8_kernels.MicroTail``) computes each output from its first
quantized value ``q`` alone, an 8-bit integer, in float32 steps (as the kernel's C does them)::

    T_n(q) = clamp(rint(f32(f32(q - zero) * scale [+ bias_n]) / scale2) + zero2, low, high)

(a product, or one ``fmaf`` with a tail bias; a correctly rounded division; round half to
even). ``q`` takes at most 256 values, so whether an affine map in fixed point,
``clamp((q * M + R_n) >> S, low, high)``, equals ``T_n`` can be checked for every ``q`` and
every row: :func:`integer_tail` searches the multiplier ``M`` and shift ``S`` (shared by the
rows) and the offsets ``R_n`` (one per row where the tail has a bias), and returns them only
where they give ``T_n``'s value for every input. On a Cortex-M4 that is ``MLA`` and ``USAT``
(with its shift) instead of an int-to-float move and conversion, a multiply, a division, a
rounding conversion and a move back (the tail's ~8 instructions an output).

The float steps are those of the graph's constants as float32 (``np.float32(scale)``), as
onnxruntime computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["IntegerTail", "TailSteps", "fmaf32", "integer_tail", "tail_bounds", "tail_values"]

# |q * M + R| stays below this: the kernel computes it in int32
_INT32_LIMIT = 2**31


class TailSteps(Protocol):
    """The tail's float steps (``int8_kernels.MicroTail``): dequantize by ``scale``, [+ the
    row's tail bias], ReLU / ReLU6, quantize by ``requant`` ``(scale2, zero2, signed2)``."""

    scale: float
    relu: bool
    relu6: bool
    requant: tuple[float, int, bool] | None


@dataclass(frozen=True)
class IntegerTail:
    """``clamp((q * multiplier + offset) >> shift, low, high)``; ``offset`` None: one per
    output row, stored in the kernel's blob where the tail bias would be."""

    multiplier: int
    shift: int
    offset: int | None = None


def tail_bounds(tail: TailSteps) -> tuple[int, int]:
    """The clamp of the tail's quantized value: the 8-bit range, from the zero point with a
    ReLU / ReLU6, up to the quantized 6 with a ReLU6 (the quantize of ``min(f, 6)`` is
    ``min(q(f), q(6))``)."""
    scale2, zero2, signed2 = tail.requant
    low, high = (-128, 127) if signed2 else (0, 255)
    if tail.relu or tail.relu6:
        low = max(low, zero2)
    if tail.relu6:
        high = min(high, zero2 + round(np.float32(6) / np.float32(scale2)))
    return low, high


def fmaf32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``fmaf`` (C99): ``a * b + c`` of float32 arrays rounded once, to nearest even."""
    a, b, c = (np.asarray(v, np.float32).astype(np.float64) for v in (a, b, c))
    p = a * b  # exact: two 24-bit significands fit a double's 53
    s = p + c
    bp = s - p
    err = (p - (s - bp)) + (c - bp)  # TwoSum: s + err == p + c exactly
    r = s.astype(np.float32)
    # s rounded to float32 is right unless s lies exactly halfway between two float32 and
    # the double rounding hid which side the exact sum is on
    toward = np.where(s > r.astype(np.float64), np.inf, -np.inf).astype(np.float32)
    other = np.nextafter(r, toward)
    halfway = (s == (r.astype(np.float64) + other.astype(np.float64)) / 2) & (err != 0)
    past = (err > 0) == (other > r)  # the exact sum is on other's side of the midpoint
    return np.where(halfway & past, other, r)


def tail_values(q: np.ndarray, zero: int, tail: TailSteps, bias: np.ndarray | None) -> np.ndarray:
    """``T_n(q)`` (module doc) of the first quantized values ``q`` (zero point ``zero``) for
    every row ``n`` of ``bias`` (one row without a bias): an int64 array ``(rows, len(q))``."""
    scale, (scale2, zero2, _) = np.float32(tail.scale), tail.requant
    x = (np.asarray(q, np.int64) - zero).astype(np.float32)[None, :]
    if bias is None:
        f = x * scale
    else:
        column = np.asarray(bias, np.float32).reshape(-1, 1)
        f = fmaf32(np.broadcast_to(x, (column.shape[0], x.shape[1])), scale, column)
    steps = np.rint((f / np.float32(scale2)).astype(np.float32)).astype(np.int64) + zero2
    return np.clip(steps, *tail_bounds(tail))


def integer_tail(
    q_range: tuple[int, int], zero: int, tail: TailSteps, bias: np.ndarray | None
) -> tuple[IntegerTail, np.ndarray | None] | None:
    """The fixed-point tail equal to the float one (module doc) for every ``q`` in
    ``q_range`` (inclusive) and every row, with the offsets per row (int32) where ``bias``
    is given; None where no multiplier and shift up to 2^24 give every value."""
    q = np.arange(q_range[0], q_range[1] + 1, dtype=np.int64)
    target = tail_values(q, zero, tail, bias)
    low, high = tail_bounds(tail)
    slope = float(np.float32(tail.scale) / np.float32(tail.requant[0]))
    for shift in range(24, 0, -1):
        found = _offsets(q, target, low, high, slope, shift)
        if found is not None:
            multiplier, offsets = found
            if bias is None:
                return IntegerTail(multiplier, shift, int(offsets[0])), None
            return IntegerTail(multiplier, shift), offsets.astype(np.int32)
    return None


def _offsets(q, target, low, high, slope, shift) -> tuple[int, np.ndarray] | None:
    """A multiplier near ``slope * 2^shift`` and each row's offset that give ``target``
    exactly, inside int32; None where none does."""
    one = 1 << shift
    # what (q * M + R) must lie in for clamp(... >> shift) to be the target
    lower = np.where(target <= low, -(2**62), target * one)
    upper = np.where(target >= high, 2**62, (target + 1) * one - 1)
    center = round(slope * one)
    for multiplier in sorted(range(center - 4, center + 5), key=lambda m: abs(m - center)):
        if multiplier <= 0:
            continue
        qm = q * multiplier
        if np.abs(qm).max() >= _INT32_LIMIT:  # C computes q * M in int32 first
            continue
        # R and every q * M + R inside int32 too (a row saturated for every q bounds R on
        # one side only)
        r_low = np.maximum((lower - qm).max(axis=1), -_INT32_LIMIT - min(0, qm.min()))
        r_high = np.minimum((upper - qm).min(axis=1), _INT32_LIMIT - 1 - max(0, qm.max()))
        if (r_low > r_high).any():
            continue
        offsets = r_low + (r_high - r_low) // 2
        got = np.clip((qm[None, :] + offsets[:, None]) >> shift, low, high)
        if not np.array_equal(got, target):  # the bounds above say it is; check anyway
            continue
        return multiplier, offsets
    return None
