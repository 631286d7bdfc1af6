"""``FastMath``: float32 transcendental ops as polynomial code that vectorises.

LLVM has no vector ``exp`` or ``erf`` of its own: with no vector math library (TVM's wheel links
none), a vectorised ``llvm.exp.v16f32`` becomes 16 calls of libm's ``expf``, and ``erf`` is a
libm call per element anyway. In an all-MiniLM-L6 encoder (seq 128) the GELUs' ``erf`` took
1 ms a layer and the softmaxes' ``exp`` 0.3 ms, more than the 90 %-sparse linear layers. TOPI's
``fast_exp``, ``fast_erf`` and ``fast_tanh`` are range reduction plus a polynomial (Cephes /
Eigen), vectorisable, and accurate to about 3e-7 relative (``tests/transform/test_fast_math.py``
checks them against float64 references): every float32 ``exp``, ``erf``, ``tanh``, sigmoid,
softmax and GELU (erf and tanh forms) becomes such code. Other dtypes are left as they are.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax, te, tirx, topi
from tvm.ir import IRModule
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import is_float32


def _const(value: float) -> tirx.FloatImm:
    return tirx.const(value, "float32")


def _gelu(x: te.Tensor) -> te.Tensor:
    """x * (0.5 + 0.5 erf(x / sqrt 2)), as TVM legalizes ``relax.nn.gelu``."""
    erf = topi.fast_erf(topi.multiply(x, _const(0.5**0.5)))
    return topi.multiply(x, topi.add(_const(0.5), topi.multiply(erf, _const(0.5))))


def _gelu_tanh(x: te.Tensor) -> te.Tensor:
    """0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), as ``relax.nn.gelu_tanh``."""
    inner = topi.multiply(
        topi.multiply(x, _const(math.sqrt(2.0 / math.pi))),
        topi.add(_const(1.0), topi.multiply(_const(0.044715), topi.multiply(x, x))),
    )
    return topi.multiply(
        topi.multiply(x, _const(0.5)), topi.add(_const(1.0), topi.fast_tanh(inner))
    )


def _sigmoid(x: te.Tensor) -> te.Tensor:
    return topi.divide(_const(1.0), topi.add(_const(1.0), topi.fast_exp(topi.negative(x))))


def _silu(x: te.Tensor) -> te.Tensor:
    return topi.multiply(x, _sigmoid(x))


# op name -> (TE function of the call's first argument, PrimFunc name)
_UNARY = {
    "relax.exp": (topi.fast_exp, "fast_exp"),
    "relax.erf": (topi.fast_erf, "fast_erf"),
    "relax.tanh": (topi.fast_tanh, "fast_tanh"),
    "relax.sigmoid": (_sigmoid, "fast_sigmoid"),
    "relax.nn.silu": (_silu, "fast_silu"),
    "relax.nn.gelu": (_gelu, "fast_gelu"),
    "relax.nn.gelu_tanh": (_gelu_tanh, "fast_gelu_tanh"),
}


@mutator
class _FastMathRewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        op = getattr(call.op, "name", None)
        if op is None or not call.args or not is_float32(call.args[0]):
            return call
        if op in _UNARY:
            func, name = _UNARY[op]
            return self.builder_.call_te(func, call.args[0], primfunc_name_hint=name)
        if op == "relax.nn.softmax":
            return self.builder_.call_te(
                topi.nn.fast_softmax, call.args[0], int(call.attrs.axis),
                primfunc_name_hint="fast_softmax",
            )  # fmt: skip
        return call


@tvm.transform.module_pass(opt_level=0, name="FastMath")
class FastMath:
    """Rewrite float32 ``exp``, ``erf``, ``tanh``, ``sigmoid``, ``silu``, ``gelu``,
    ``gelu_tanh`` and ``softmax`` calls of every Relax function into TE code built on TOPI's
    ``fast_exp`` / ``fast_erf`` / ``fast_tanh``."""

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        rewriter = _FastMathRewriter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()
