"""The QDQ tail in fixed point (sparse_tvm.micro.integer_tail): equal to the float tail for
every 8-bit input, checked against an exact reference (fractions, float32 rounding to nearest
even, one rounding per float step); ``fmaf32`` rounds once where the double-precision sum
would round twice."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sparse_tvm.micro.int8_kernels import MicroTail
from sparse_tvm.micro.integer_tail import fmaf32, integer_tail, tail_bounds


def _to_f32(x: Fraction) -> np.float32:
    """``x`` rounded to the nearest float32, ties to the even significand."""
    near = np.float32(float(x))
    candidates = [
        np.nextafter(near, np.float32(-np.inf)),
        near,
        np.nextafter(near, np.float32(np.inf)),
    ]
    best = min(abs(Fraction(float(c)) - x) for c in candidates)
    ties = [c for c in candidates if abs(Fraction(float(c)) - x) == best]
    return min(ties, key=lambda c: int(np.float32(c).view(np.uint32)) & 1)


def _rint(x: Fraction) -> int:
    whole, rest = divmod(x, 1)
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2):
        whole += 1
    return int(whole)


def _float_tail(q: int, zero: int, tail: MicroTail, bias) -> int:
    """The tail's float steps, each rounded exactly once (the reference)."""
    scale2, zero2, _ = tail.requant
    x, s = Fraction(q - zero), Fraction(float(np.float32(tail.scale)))
    f = _to_f32(x * s if bias is None else x * s + Fraction(float(np.float32(bias))))
    y = _to_f32(Fraction(float(f)) / Fraction(float(np.float32(scale2))))
    low, high = tail_bounds(tail)
    return min(max(_rint(Fraction(float(y))) + zero2, low), high)


f32 = st.floats(-1e6, 1e6, width=32, allow_subnormal=False)


@settings(max_examples=300, deadline=None)
@given(f32, f32, f32)
def test_fmaf32_rounds_once(a, b, c):
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    assert fmaf32(np.float32(a), np.float32(b), np.float32(c)) == _to_f32(exact)


@pytest.mark.parametrize("sign", [1, -1])
def test_fmaf32_where_the_double_sum_lands_halfway(sign):
    # (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24: halfway between two float32; a tiny addend decides
    a = np.float32(1 + 2.0**-12)
    tiny = np.float32(sign * 2.0**-70)
    exact = Fraction(float(a)) ** 2 + Fraction(float(tiny))
    got = fmaf32(a, a, tiny)
    assert got == _to_f32(exact)
    naive = np.float32(np.float64(a) * np.float64(a) + np.float64(tiny))
    assert (got != naive) == (sign == 1)  # the double sum rounds to the midpoint, then even


@settings(max_examples=60, deadline=None)
@given(
    scale=st.floats(1e-3, 1.0),
    scale2=st.floats(1e-3, 1.0),
    signed=st.booleans(),
    signed2=st.booleans(),
    zero=st.integers(0, 255),
    zero2=st.integers(0, 255),
    relu=st.booleans(),
    relu6=st.booleans(),
    stage_relu=st.booleans(),
    bias=st.none() | st.lists(st.floats(-3, 3, width=32), min_size=1, max_size=3),
)
def test_fixed_point_tail_equals_the_float_tail_for_every_input(
    scale, scale2, signed, signed2, zero, zero2, relu, relu6, stage_relu, bias
):
    if signed:
        zero -= 128
    if signed2:
        zero2 -= 128
    lowest, highest = (-128, 127) if signed else (0, 255)
    q_range = (zero if stage_relu else lowest, highest)
    tail = MicroTail(scale, relu, relu6, (scale2, zero2, signed2))
    biases = None if bias is None else np.asarray(bias, np.float32)
    found = integer_tail(q_range, zero, tail, biases)
    assert found is not None  # scales from 1e-3 to 1: always found so far
    fixed, offsets = found
    low, high = tail_bounds(tail)
    rows = [None] if biases is None else list(biases)
    for n, b in enumerate(rows):
        offset = fixed.offset if b is None else int(offsets[n])
        for q in range(q_range[0], q_range[1] + 1):
            value = q * fixed.multiplier + offset
            assert -(2**31) <= value < 2**31  # the kernel's int32
            got = min(max(value >> fixed.shift, low), high)
            assert got == _float_tail(q, zero, tail, b), (n, q)
