"""The value of a one-element constant in a Relax function: a literal, or a weight parameter."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

__all__ = ["scalar_value"]


def scalar_value(
    expr: relax.Expr, weights: dict[relax.Var, np.ndarray] | None = None
) -> float | None:
    """The value of a one-element constant (or one-element weight in ``weights``), else None."""
    if weights and isinstance(expr, relax.Var) and expr in weights:
        arr = weights[expr]
        return float(arr.reshape(())) if arr.size == 1 else None
    if isinstance(expr, tvm.ir.expr.GenericConst) and expr.value.numpy().size == 1:
        return float(expr.value.numpy().reshape(()))
    return None
