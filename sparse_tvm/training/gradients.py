"""Gradients TVM 0.27 lacks, so that transformer blocks train.

``relax.transform.Gradient`` needs an ``FPrimalGradient`` for every operator it meets. TVM has
none for ``erf``, ``gelu``, ``gelu_tanh`` and ``clip``; they are registered here (once, at a
level that never overrides one TVM may ship later). ``layer_norm`` is decomposed into mean,
variance and elementwise ops by ``DecomposeOpsForTraining`` before differentiation (see
:func:`sparse_tvm.training.graph.differentiable`).
"""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.op import exp, greater_equal, less_equal, multiply, tanh
from tvm.relax.op.grad import no_grad

_GRADIENT = "FPrimalGradient"


def _dtype(expr: relax.Expr) -> str:
    return str(expr.ty.dtype)


def erf_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """d erf(x) / dx = 2 / sqrt(pi) * exp(-x^2)."""
    x = orig_call.args[0]
    scale = relax.const(2.0 / math.sqrt(math.pi), _dtype(x))
    return [output_grad * scale * exp(-(x * x))]


def gelu_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """gelu(x) = x * Phi(x): d/dx = Phi(x) + x * phi(x)."""
    x = orig_call.args[0]
    dtype = _dtype(x)
    cdf = relax.const(0.5, dtype) * (
        relax.const(1.0, dtype) + relax.op.erf(x * relax.const(1.0 / math.sqrt(2.0), dtype))
    )
    pdf = relax.const(1.0 / math.sqrt(2.0 * math.pi), dtype) * exp(relax.const(-0.5, dtype) * x * x)
    return [output_grad * (cdf + x * pdf)]


def gelu_tanh_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """gelu_tanh(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)."""
    x = orig_call.args[0]
    dtype = _dtype(x)

    def c(v: float) -> relax.Expr:
        return relax.const(v, dtype)

    k = math.sqrt(2.0 / math.pi)
    t = tanh(c(k) * (x + c(0.044715) * x * x * x))
    du = c(k) * (c(1.0) + c(3 * 0.044715) * x * x)
    return [output_grad * (c(0.5) * (c(1.0) + t) + c(0.5) * x * (c(1.0) - t * t) * du)]


def clip_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """The gradient passes where ``min <= x <= max`` (subgradient 1 at the bounds)."""
    x, low, high = orig_call.args
    dtype = _dtype(x)
    inside = multiply(
        relax.op.astype(greater_equal(x, relax.const(float(low.value), dtype)), dtype),
        relax.op.astype(less_equal(x, relax.const(float(high.value), dtype)), dtype),
    )
    return [output_grad * inside, no_grad(low), no_grad(high)]


_MISSING = {
    "relax.erf": erf_grad,
    "relax.nn.gelu": gelu_grad,
    "relax.nn.gelu_tanh": gelu_tanh_grad,
    "relax.clip": clip_grad,
}


def register_missing_gradients() -> list[str]:
    """Register the gradients above where TVM has none; returns the operators registered now."""
    registered = []
    for name, fgradient in _MISSING.items():
        if tvm.ir.Op.get(name).get_attr(_GRADIENT) is None:
            tvm.ir.register_op_attr(name, _GRADIENT, fgradient, level=10)
            registered.append(name)
    return registered
