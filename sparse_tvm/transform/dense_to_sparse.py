"""``DenseToSparse``: rewrite chosen matmul / conv2d layers into calls of sparse TIR kernels.

For every planned layer the pass replaces the last op of the layer's chain (matmul or conv2d,
then the bias add and ReLU that the kernel fuses) by a ``call_tir`` of a sparse kernel whose
weight is passed as three Relax constants (``data``, ``indices``, ``indptr``): the weights are
stored compressed in the compiled artefact. The original dense ops become dead and are removed
by dead-code elimination; everything else is left for the dense pipeline.

- MatMul / Gemm: activations (..., k) are viewed as an (m, k) matrix, multiplied by W^T.
- Conv 1x1 (stride 1, no padding): NCHW is already (batch, k, m) with m = H*W: one SpMM in the
  "KM" layout, no copy.
- Conv kxk (and strided 1x1): im2col into (batch, c*kh*kw, oh*ow), then the same SpMM. im2col
  rather than a direct sparse convolution because it reuses the one tuned SpMM kernel (and its
  schedules and records) for every conv shape; its cost is the column buffer, c*kh*kw*oh*ow
  floats, which is small for the layers that are worth making sparse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import Layer
from sparse_tvm.formats import BlockSparseWeight
from sparse_tvm.kernels import im2col_kernel, spmm_kernel
from sparse_tvm.pipeline.cpu import HAND_WRITTEN_ATTR


@dataclass
class SparsePlan:
    """A layer to rewrite, its weight in the chosen sparse format, and optionally the kernel.

    ``kernel`` (a PrimFunc with the signature of :func:`spmm_kernel`'s result, e.g. one applied
    from tuning records) replaces the hand-scheduled default kernel.
    """

    layer: Layer
    weight: BlockSparseWeight
    kernel: tvm.tirx.PrimFunc | None = None


def kernel_factories(target: tvm.target.Target | None):
    """``(spmm, im2col)`` kernel builders for ``target``: the CUDA kernels for a ``cuda`` target
    (:mod:`sparse_tvm.kernels.cuda`), else the CPU ones. Same parameters and results."""
    if target is not None and target.kind.name == "cuda":
        from sparse_tvm.kernels.cuda import cuda_im2col_kernel, cuda_spmm_kernel

        return cuda_spmm_kernel, cuda_im2col_kernel
    return spmm_kernel, im2col_kernel


def _sanitize(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_") or "layer"


def _with_root_block(func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    """Wrap a loop-nest kernel in the root sblock that Relax's analyses (op-pattern and
    reshape detection, layout-rewrite splitting) expect of every ``call_tir`` callee."""
    if not isinstance(func.body, s_tir.SBlockRealize):
        root = s_tir.SBlock([], [], [], "root", func.body)
        func = func.with_body(s_tir.SBlockRealize([], True, root))
    return func.with_attr(HAND_WRITTEN_ATTR, True)


def kernel_layout(layer: Layer) -> tuple[str, int]:
    """``(x_layout, batch)`` of the SpMM kernel a layer becomes: a matmul reads its activations
    as (m, k) rows ("MK"); a conv reads NCHW, i.e. (batch, k, m) ("KM")."""
    if layer.op == "matmul":
        return "MK", 1
    return "KM", int(layer.conv.input_shape[0])


def kernel_options(layer: Layer) -> dict[str, Any]:
    """The keyword arguments of the layer's SpMM kernel (``spmm_kernel``, ``tune_kernel``,
    ``lookup_kernel``, ...): its layout and batch (:func:`kernel_layout`) and its fusion."""
    x_layout, batch = kernel_layout(layer)
    return {
        "x_layout": x_layout,
        "batch": batch,
        "bias": layer.bias is not None,
        "relu": layer.relu,
    }


def rebind(rewriter: PyExprMutator, var: relax.Var, value: relax.Expr) -> None:
    """Bind ``value`` where ``var`` was bound and make later uses of ``var`` read it.

    A dataflow block output must stay visible after the block, so it is emitted as an output.
    """
    if isinstance(var, relax.DataflowVar):
        new_var = rewriter.builder_.emit(value, var.name)
    else:
        new_var = rewriter.builder_.emit_output(value, var.name)
    rewriter.set_var_remap(var, new_var)


def _tensor(shape, dtype: str = "float32") -> relax.TensorType:
    return relax.TensorType([int(s) for s in shape], dtype)


@mutator
class _Rewriter(PyExprMutator):
    def __init__(
        self, mod: tvm.IRModule, plans: list[SparsePlan], target: tvm.target.Target
    ) -> None:
        super().__init__(mod)
        self.target = target
        self.by_end: dict[relax.Var, SparsePlan] = {p.layer.end_var: p for p in plans}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        plan = self.by_end.get(binding.var)
        if plan is None:
            super().visit_var_binding_(binding)
            return
        rebind(self, binding.var, self._emit_layer(plan))

    # -- one layer ------------------------------------------------------------------------
    def _constants(self, plan: SparsePlan) -> list[relax.Expr]:
        w = plan.weight
        args = [relax.const(w.data), relax.const(w.indices), relax.const(w.indptr)]
        if plan.layer.bias is not None:
            args.append(relax.const(np.ascontiguousarray(plan.layer.bias, np.float32)))
        return args

    def _kernel(self, plan: SparsePlan, x_layout: str, batch: int) -> relax.GlobalVar:
        layer = plan.layer
        if plan.kernel is not None:
            func = plan.kernel
        else:
            func = kernel_factories(self.target)[0](
                plan.weight,
                layer.m,
                x_layout=x_layout,
                batch=batch,
                bias=layer.bias is not None,
                relu=layer.relu,
                target=self.target,
            )
        name = f"sparse_{plan.weight.block[0]}x{plan.weight.block[1]}_{_sanitize(layer.name)}"
        func = _with_root_block(func).with_attr("global_symbol", name)
        return self.builder_.add_func(func, name)

    def _emit_layer(self, plan: SparsePlan) -> relax.Expr:
        layer = plan.layer
        call = self._call_of(layer)
        x = self.visit_expr(call.args[0])
        n = layer.weight.shape[0]
        if layer.op == "matmul":
            k = layer.weight.shape[1]
            x2 = (
                x
                if len(layer.input_shape) == 2
                else self.builder_.emit(relax.op.reshape(x, (layer.m, k)))
            )
            out = self.builder_.emit(
                relax.call_tir(
                    self._kernel(plan, "MK", 1), [x2, *self._constants(plan)], _tensor((layer.m, n))
                )
            )
            if len(layer.output_shape) == 2:
                return out
            return relax.op.reshape(out, layer.output_shape)
        geometry = layer.conv
        batch, channels, height, width = geometry.input_shape
        if geometry.is_pointwise:
            cols = self.builder_.emit(relax.op.reshape(x, (batch, channels, height * width)))
        else:
            im2col = kernel_factories(self.target)[1](
                batch,
                channels,
                height,
                width,
                geometry.kernel,
                geometry.strides,
                geometry.padding,
                geometry.dilation,
            )
            name = f"im2col_{_sanitize(layer.name)}"
            im2col = _with_root_block(im2col).with_attr("global_symbol", name)
            gv = self.builder_.add_func(im2col, name)
            cols = self.builder_.emit(
                relax.call_tir(gv, [x], _tensor((batch, layer.weight.shape[1], layer.m)))
            )
        out = self.builder_.emit(
            relax.call_tir(
                self._kernel(plan, "KM", batch),
                [cols, *self._constants(plan)],
                _tensor((batch, n, layer.m)),
            )
        )
        return relax.op.reshape(out, layer.output_shape)

    def _call_of(self, layer: Layer) -> relax.Call:
        return self._bindings[layer.call_var]

    def rewrite(self, func: relax.Function) -> relax.Function:
        self._bindings = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self._bindings[binding.var] = binding.value
        return self.visit_expr(func)


@tvm.transform.module_pass(opt_level=0, name="DenseToSparse")
class DenseToSparse:
    """Rewrite the planned layers of ``main`` into sparse kernel calls.

    Parameters
    ----------
    plans
        The layers (found by :func:`sparse_tvm.analysis.find_layers` on this module's ``main``)
        and their sparse weights.
    target
        The target the kernels are generated for.
    """

    def __init__(self, plans: list[SparsePlan], target: tvm.target.Target) -> None:
        self.plans = plans
        self.target = target

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if not self.plans:
            return mod
        rewriter = _Rewriter(mod, self.plans, self.target)
        main = rewriter.rewrite(mod["main"])
        rewriter.builder_.update_func(mod.get_global_var("main"), main)
        new_mod = rewriter.builder_.get()
        return relax.transform.DeadCodeElimination(["main"])(new_mod)
