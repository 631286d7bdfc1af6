"""A QDQ model's float32 -> 8-bit ``quantize`` ops on a microcontroller, as one small kernel.

TVM legalizes ``relax.quantize`` to ``nearbyint(x / scale) + zero``, and on a Cortex-M4 (no
``VRINT``) ``nearbyintf`` is a libm call of some 30 instructions per element: for the digits
MLP's 64 inputs, a tenth of the int8 model's work. Each per-tensor float32 quantize with
constant scale and zero point becomes a kernel that divides (as QuantizeLinear does), rounds
half to even with ``stvm_rint`` (one ``VCVTR`` on a core with an FPU), adds the zero point and
saturates. (A max pool between a quantize / dequantize pair already runs on the 8-bit values:
``frontend/fold_requantize``.)
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator
from tvm.script import tirx as T

from sparse_tvm.analysis.quantized import requantize_of
from sparse_tvm.micro.int8_kernels import quantized_value
from sparse_tvm.transform.lowering import add_kernel, tensor_type

__all__ = ["QuantizedActivations", "quantize_kernel"]


def quantize_kernel(size: int, scale: float, zero: int, signed: bool) -> tvm.tirx.PrimFunc:
    """``Y[i] = saturate(round_half_even(X[i] / scale) + zero)``, int8 or uint8."""
    dtype = "int8" if signed else "uint8"

    @T.prim_func
    def kernel(X: T.Buffer((size,), "float32"), Y: T.Buffer((size,), dtype)):
        # opaque (8): FuseOps would fuse the reshapes around it, which FuseTIR then rejects
        T.func_attr({"tirx.is_scheduled": True, "tirx.noalias": True, "op_pattern": 8})
        for i in range(size):
            Y[i] = T.Cast(dtype, quantized_value(X[i] / T.float32(scale), zero, signed))

    return kernel


@mutator
class _Rewriter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") != "relax.quantize":
            return call
        found = requantize_of(call, {})
        if found is None:
            return call
        ty = call.ty
        if ty.shape is None or str(call.args[0].ty.dtype) != "float32":
            return call
        shape = [int(s) for s in ty.shape]
        size = int(np.prod(shape))
        gv = add_kernel(
            self.builder_, quantize_kernel(size, *found), "quantize", hand_written=False
        )
        flat = self.builder_.emit(relax.op.reshape(call.args[0], (size,)))
        out = self.builder_.emit(relax.call_tir(gv, [flat], tensor_type((size,), str(ty.dtype))))
        return relax.op.reshape(out, shape)


@tvm.transform.module_pass(opt_level=0, name="MicroQuantizedActivations")
class QuantizedActivations:
    """Rewrite ``main``'s float32 -> 8-bit quantize ops (module doc)."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        rewriter = _Rewriter(mod)
        main = rewriter.visit_expr(mod["main"])
        rewriter.builder_.update_func(mod.get_global_var("main"), main)
        return rewriter.builder_.get()
