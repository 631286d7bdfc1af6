"""GELU as a TIR expression, for a kernel's epilogue: ``x * (0.5 + 0.5 erf(x / sqrt 2))``.

The erf is the rational approximation of TOPI's ``fast_erf`` (Eigen's: the argument clamped to
[-4, 4], an odd degree-13 numerator over an even degree-8 denominator), the one
:mod:`sparse_tvm.transform.fast_math` gives every other float32 erf of a model, so a fused GELU
computes what the unfused one did. Plain arithmetic: it vectorises with the kernel's stores.
"""

from __future__ import annotations

import math

from tvm import tirx

__all__ = ["f32", "fast_erf", "gelu", "horner"]

# highest power first; numerator in x^2 (times x), denominator in x^2
_NUMERATOR = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_DENOMINATOR = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def f32(value: float) -> tirx.FloatImm:
    """A float32 constant."""
    return tirx.const(value, "float32")


def horner(x: tirx.PrimExpr, coefficients: tuple[float, ...]) -> tirx.PrimExpr:
    """The polynomial in ``x`` with ``coefficients``, highest power first (Horner's scheme)."""
    out = f32(coefficients[0])
    for c in coefficients[1:]:
        out = out * x + f32(c)
    return out


def fast_erf(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """float32 erf of ``x`` (scalar or vector), within ~3e-7 of the exact value."""
    x = tirx.max(tirx.min(x, f32(4.0)), f32(-4.0))
    x2 = x * x
    return x * horner(x2, _NUMERATOR) / horner(x2, _DENOMINATOR)


def gelu(x: tirx.PrimExpr) -> tirx.PrimExpr:
    """``x * (0.5 + 0.5 erf(x / sqrt 2))``: what ``relax.nn.gelu`` computes."""
    erf = fast_erf(x * f32(math.sqrt(0.5)))
    return x * (f32(0.5) + erf * f32(0.5))
