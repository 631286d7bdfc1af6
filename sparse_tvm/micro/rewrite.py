"""``MicroDenseToSparse``: rewrite chosen layers into calls of the micro sparse kernels.

The same job as :class:`sparse_tvm.transform.DenseToSparse` (replace the last op of a layer's
chain, matmul / conv2d then bias add and ReLU, by one ``call_tir`` whose weight arrives as
Relax constants), with the microcontroller's choices: compact ``r x 1`` weights with 8/16-bit
indices and a direct sparse convolution instead of im2col (see :mod:`sparse_tvm.micro.kernels`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, s_tir
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import Layer
from sparse_tvm.micro import kernels
from sparse_tvm.micro.compact import CompactSparseWeight
from sparse_tvm.transform.dense_to_sparse import rebind


@dataclass
class MicroPlan:
    """A layer to make sparse and its compact weight."""

    layer: Layer
    weight: CompactSparseWeight


def _sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "layer"


def _with_root_block(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """Relax's analyses (op pattern, fusion) expect a root sblock in every callee."""
    if not isinstance(func.body, s_tir.SBlockRealize):
        root = s_tir.SBlock([], [], [], "root", func.body)
        func = func.with_body(s_tir.SBlockRealize([], True, root))
    return func


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plans: list[MicroPlan]) -> None:
        super().__init__(mod)
        self.by_end = {p.layer.end_var: p for p in plans}
        self.bindings: dict[relax.Var, relax.Expr] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        plan = self.by_end.get(binding.var)
        if plan is None:
            super().visit_var_binding_(binding)
            return
        rebind(self, binding.var, self._emit_layer(plan))

    def _emit_layer(self, plan: MicroPlan) -> relax.Expr:
        layer, w = plan.layer, plan.weight
        x = self.visit_expr(self.bindings[layer.call_var].args[0])
        bias = layer.bias is not None
        args = [relax.const(w.data), relax.const(w.indices), relax.const(w.indptr)]
        if bias:
            args.append(relax.const(np.ascontiguousarray(layer.bias, np.float32)))
        n, k = w.shape
        if layer.op == "matmul":
            func = kernels.spmm_rows(w, layer.m, bias=bias, relu=layer.relu)
            if len(layer.input_shape) != 2:
                x = self.builder_.emit(relax.op.reshape(x, (layer.m, k)))
            out_shape = (layer.m, n)
        elif layer.conv.is_pointwise:
            batch, channels, height, width = layer.conv.input_shape
            x = self.builder_.emit(relax.op.reshape(x, (batch, channels, height * width)))
            func = kernels.spmm_channels(w, batch, layer.m, bias=bias, relu=layer.relu)
            out_shape = (batch, n, layer.m)
        else:
            g = layer.conv
            func = kernels.sparse_conv2d(
                w,
                g.input_shape,
                g.kernel,
                g.strides,
                g.padding,
                g.dilation,
                g.output_hw,
                bias=bias,
                relu=layer.relu,
            )
            out_shape = layer.output_shape
        name = f"sparse_{w.r}x1_{_sanitize(layer.name)}"
        gv = self.builder_.add_func(_with_root_block(func).with_attr("global_symbol", name), name)
        out = relax.call_tir(
            gv, [x, *args], relax.TensorType([int(s) for s in out_shape], "float32")
        )
        if tuple(out_shape) == tuple(layer.output_shape):
            return out
        return relax.op.reshape(self.builder_.emit(out), layer.output_shape)

    def rewrite(self, func: relax.Function) -> relax.Function:
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.bindings[binding.var] = binding.value
        return self.visit_expr(func)


@tvm.transform.module_pass(opt_level=0, name="MicroDenseToSparse")
class MicroDenseToSparse:
    """Rewrite the planned layers of ``main`` into micro sparse kernel calls."""

    def __init__(self, plans: list[MicroPlan]) -> None:
        self.plans = plans

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.plans:
            return mod
        rewriter = _Rewriter(mod, self.plans)
        main = rewriter.rewrite(mod["main"])
        rewriter.builder_.update_func(mod.get_global_var("main"), main)
        return relax.transform.DeadCodeElimination(["main"])(rewriter.builder_.get())
