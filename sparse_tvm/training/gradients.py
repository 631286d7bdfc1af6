"""Gradients TVM 0.27 lacks, so that transformer blocks train.

``relax.transform.Gradient`` needs an ``FPrimalGradient`` for every operator it meets. TVM has
none for ``erf``, ``gelu``, ``gelu_tanh``, ``clip`` and ``squeeze`` (in every PyTorch attention
export); they are registered here (once, at a level that never overrides one TVM may ship
later). Where one is still missing, :func:`missing_gradient_op` and :func:`locate_op` let the
trainer say which operator and which layer. ``layer_norm`` is decomposed into mean,
variance and elementwise ops by ``DecomposeOpsForTraining`` before differentiation (see
:func:`sparse_tvm.training.graph.differentiable`).
"""

from __future__ import annotations

import math
import re

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


def squeeze_grad(orig_var, orig_call, output_grad, ctx) -> list[relax.Expr]:
    """squeeze only drops axes of extent 1: the gradient is ``output_grad`` in ``x``'s shape."""
    x = orig_call.args[0]
    return [relax.op.reshape(output_grad, x.ty.shape)]


_MISSING = {
    "relax.erf": erf_grad,
    "relax.nn.gelu": gelu_grad,
    "relax.nn.gelu_tanh": gelu_tanh_grad,
    "relax.clip": clip_grad,
    "relax.squeeze": squeeze_grad,
}


def register_missing_gradients() -> list[str]:
    """Register the gradients above where TVM has none; returns the operators registered now."""
    registered = []
    for name, fgradient in _MISSING.items():
        if tvm.ir.Op.get(name).get_attr(_GRADIENT) is None:
            tvm.ir.register_op_attr(name, _GRADIENT, fgradient, level=10)
            registered.append(name)
    return registered


_NOT_REGISTERED = re.compile(r"FPrimalGradient has not been registered for ([\w.]+)")
_CALL_TIR = "Differentiation of call_tir op"


def missing_gradient_op(error: BaseException) -> str | None:
    """The operator TVM's ``Gradient`` found no gradient for: the name in its "FPrimalGradient
    has not been registered for relax.X" error, ``relax.call_tir`` for a TIR function the
    importer emitted directly (ONNX ``Tile``, for one); None for any other error."""
    found = _NOT_REGISTERED.search(str(error))
    if found:
        return found.group(1)
    return "relax.call_tir" if _CALL_TIR in str(error) else None


def describe_op(func: relax.Function, op_name: str) -> str:
    """``op_name``, or for ``relax.call_tir`` the TIR function its first call runs."""
    if op_name != "relax.call_tir":
        return op_name
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", None) == op_name:
                return f"the TIR function '{value.args[0].name_hint}' (relax.call_tir)"
    return op_name


def locate_op(func: relax.Function, op_name: str, weights: set[str]) -> tuple[str, str] | None:
    """Where the first call of ``op_name`` in ``func`` sits relative to the ``weights``
    (parameter names): ``("in", w)`` when it takes weight ``w`` itself (or a reshaped,
    transposed... copy of it), ``("after", w)`` when ``w`` is the nearest weight upstream,
    ``("before", w)`` when no weight is upstream and ``w`` is the first one downstream; None
    when it touches no weight at all."""
    own: dict[relax.Var, str] = {p: p.name for p in func.params if p.name in weights}
    origin: dict[relax.Var, str] = {}  # var -> nearest weight upstream
    found = None  # the var bound to the op's first call
    downstream: set[relax.Var] = set()  # vars computed from it
    for block in func.body.blocks:
        for binding in block.bindings:
            used = list(relax.analysis.free_vars(binding.value))
            direct = list(dict.fromkeys(own[v] for v in used if v in own))
            if len(direct) == 1 and all(v in own for v in used):
                own[binding.var] = direct[0]  # a function of one weight alone
            upstream = direct + [origin[v] for v in used if v in origin and v not in own]
            if upstream:
                origin[binding.var] = upstream[0]
            value = binding.value
            is_op = (
                isinstance(value, relax.Call)
                and isinstance(value.op, tvm.ir.Op)
                and value.op.name == op_name
            )
            if found is None and is_op:
                if direct:
                    return "in", direct[0]
                if upstream:
                    return "after", upstream[0]
                found = binding.var
                downstream.add(found)
            elif found is not None and any(v in downstream for v in used):
                if direct:
                    return "before", direct[0]
                downstream.add(binding.var)
    return None
