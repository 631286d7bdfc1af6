"""``DenseToSparse``: rewrite chosen matmul / conv2d layers into calls of sparse TIR kernels.

For every planned layer the pass replaces the last op of the layer's chain (matmul or conv2d,
then the bias add and ReLU that the kernel fuses) by what the back end's
:class:`~sparse_tvm.transform.lowering.LayerLowering` emits for it: a ``call_tir`` of a sparse
kernel whose weight is passed as Relax constants, so that the weights are stored compressed.
The original dense ops become dead and are removed by dead-code elimination; everything else is
left for the dense pipeline.

The Linux back ends lower with :class:`~sparse_tvm.transform.spmm_lowering.SpmmLowering`
(im2col + SpMM), the micro back end with :class:`sparse_tvm.micro.lowering.MicroLowering`.
"""

from __future__ import annotations

import dataclasses

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.transform.lowering import LayerLowering, SparsePlan

# Importable from here as before: the driver, tuning and benchmarks use them.
from sparse_tvm.transform.spmm_lowering import kernel_layout, kernel_options

__all__ = [
    "DenseToSparse",
    "SparsePlan",
    "kernel_layout",
    "kernel_options",
    "rebind",
]


def rebind(rewriter: PyExprMutator, var: relax.Var, value: relax.Expr) -> None:
    """Bind ``value`` where ``var`` was bound and make later uses of ``var`` read it.

    A dataflow block output must stay visible after the block, so it is emitted as an output.
    """
    if isinstance(var, relax.DataflowVar):
        new_var = rewriter.builder_.emit(value, var.name)
    else:
        new_var = rewriter.builder_.emit_output(value, var.name)
    rewriter.set_var_remap(var, new_var)


@mutator
class _Rewriter(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, plans: list[SparsePlan], lowering: LayerLowering) -> None:
        super().__init__(mod)
        self.lowering = lowering
        self.by_end: dict[relax.Var, SparsePlan] = {p.layer.end_var: p for p in plans}
        self.bindings: dict[relax.Var, relax.Expr] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        plan = self.by_end.get(binding.var)
        if plan is None:
            super().visit_var_binding_(binding)
            return
        # the layer's first op (matmul / conv2d) reads the activation: its args[0]; an int8
        # plan reads the uint8 activations behind its dequantize
        if getattr(plan.weight, "is_int8", False):  # Int8Blocks, micro.MicroInt8Weight
            ops = plan.layer.int8
            x = self.visit_expr(ops.x)
            if ops.dynamic:  # the run-time scale and zero point, as rewritten so far
                ops = dataclasses.replace(
                    ops, x_scale=self.visit_expr(ops.x_scale), x_zero=self.visit_expr(ops.x_zero)
                )
                plan = dataclasses.replace(plan, layer=dataclasses.replace(plan.layer, int8=ops))
        else:
            x = self.visit_expr(self.bindings[plan.layer.call_var].args[0])
        rebind(self, binding.var, self.lowering.lower(self.builder_, plan, x))

    def rewrite(self, func: relax.Function) -> relax.Function:
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.bindings[binding.var] = binding.value
        return self.visit_expr(func)


@tvm.transform.module_pass(opt_level=0, name="DenseToSparse")
class DenseToSparse:
    """Rewrite the planned layers of ``main`` into sparse kernel calls.

    Parameters
    ----------
    plans
        The layers (found by :func:`sparse_tvm.analysis.find_layers` on this module's ``main``)
        and their sparse weights, in the format ``lowering`` takes.
    lowering
        What each layer becomes, e.g. ``SpmmLowering(target)`` for a CPU target,
        ``SpmmLowering(target, cuda_spmm_kernel, cuda_im2col_kernel)`` for CUDA, or
        ``MicroLowering()``.
    """

    def __init__(self, plans: list[SparsePlan], lowering: LayerLowering) -> None:
        self.plans = plans
        self.lowering = lowering

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.plans:
            return mod
        rewriter = _Rewriter(mod, self.plans, self.lowering)
        main = rewriter.rewrite(mod["main"])
        rewriter.builder_.update_func(mod.get_global_var("main"), main)
        new_mod = rewriter.builder_.get()
        return relax.transform.DeadCodeElimination(["main"])(new_mod)
