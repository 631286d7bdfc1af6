"""float32 ``exp`` as a TIR expression, for kernels that take a softmax in.

TOPI's ``fast_exp`` (Cephes: ``2^n * p(f)`` with ``n = floor(x log2 e + 1/2)``, ``f = x - n ln 2``
and a degree-7 polynomial ``p``; the exponent built in the float's bits), the one
:mod:`sparse_tvm.transform.fast_math` gives every other float32 exp of a model, so a fused softmax
computes what the unfused one did. Plain arithmetic: it vectorises.
"""

from __future__ import annotations

from tvm import tirx

from .fast_gelu import f32, horner

__all__ = ["fast_exp"]

# p(f) = ((((((c0 f + c1) f + c2) f + c3) f + c4) f + c5) f^2 + f + 1
_POLYNOMIAL = (
    1.9875691500e-4,
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
)
_X_HI = 88.3762626647950
_X_LO = -88.3762626647949
_LOG2E = 1.44269504088896341
_LN2 = 0.6931471805599453


def fast_exp(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """float32 ``exp(x)`` (scalar or vector): bit for bit TOPI's ``fast_exp``."""
    clamped = tirx.max(tirx.min(x, f32(_X_HI)), f32(_X_LO))
    n = tirx.floor(clamped * f32(_LOG2E) + f32(0.5))
    f = clamped - n * f32(_LN2)
    y = horner(f, _POLYNOMIAL) * f * f + f + f32(1.0)
    two_n = tirx.reinterpret(
        "float32", tirx.shift_left(tirx.Cast("int32", n + f32(127.0)), tirx.const(23, "int32"))
    )
    return tirx.max(two_n * y, x)
