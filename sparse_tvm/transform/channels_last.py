"""Channels-last CNNs for CPUs: convert a model's convolutions and pools to NHWC once.

Why NHWC (measured, ``benchmarks/conv_layouts.py``, 2 threads, AVX-512): with the CPU schedule
rules a conv's output channels are the contiguous axis the rule vectorises, with the weight in
HWIO every vector load is unit-stride, and a 1x1 conv is exactly the matmul-layout GEMM (a sparse
one the row-vector SpMM of the transformer layers). The same convs in NCHW ran 4-10x slower, and
TVM's channel-blocked NCHW[x]c layouts do not legalize in Relax. A CNN whose convs all go
sparse is the exception: it stays NCHW (:mod:`sparse_tvm.transform.layout_choice`).

``to_channels_last`` runs TVM's ``ConvertLayout`` (conv2d to NHWC / HWIO; pools, elementwise
ops, adds and means follow their inputs), so transposes are
left only at the model's edges (the image in, a flatten or a non-convertible op). The weights'
transposes are then folded into the weights themselves: the module's conv weight parameters are
HWIO arrays with their ONNX names, so every later stage (analysis, decision, rewrite, binding)
sees the layout the kernels run in.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.transform.qdq_permutes import cancel_qdq_permutes

if TYPE_CHECKING:
    from sparse_tvm.frontend import ImportedModel

# Pools, elementwise ops, adds and means take no desired layout: they follow their input's.
DESIRED_LAYOUTS = {"relax.nn.conv2d": ["NHWC", "HWIO"]}


def _has_nchw_conv(func: relax.Function) -> bool:
    found = False

    def visit(expr: relax.Expr) -> None:
        nonlocal found
        if (
            isinstance(expr, relax.Call)
            and isinstance(expr.op, tvm.ir.Op)
            and expr.op.name == "relax.nn.conv2d"
            and str(expr.attrs.data_layout) == "NCHW"
        ):
            found = True

    relax.analysis.post_order_visit(func, visit)
    return found


def _weight_permutes(
    func: relax.Function, params: dict[str, np.ndarray]
) -> dict[relax.Var, tuple[int, ...]]:
    """The conv weight parameters (4-D) read only through ``permute_dims``, all with the same
    axes: the transposes ``ConvertLayout`` put in front of the NHWC convs."""
    weights = {p for p in func.params if p.name in params and params[p.name].ndim == 4}
    uses: dict[relax.Var, set] = {w: set() for w in weights}

    def any_use(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Var) and expr in weights:
            uses[expr].add(None)

    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if (
                isinstance(value, relax.Call)
                and isinstance(value.op, tvm.ir.Op)
                and value.op.name == "relax.permute_dims"
                and value.args[0] in weights
                and value.attrs.axes is not None
            ):
                uses[value.args[0]].add(tuple(int(a) for a in value.attrs.axes))
            else:
                relax.analysis.post_order_visit(value, any_use)
    relax.analysis.post_order_visit(func.body.body, any_use)
    return {
        var: next(iter(found))
        for var, found in uses.items()
        if len(found) == 1 and None not in found
    }


@mutator
class _FoldPermutes(PyExprMutator):
    """Drop ``v = permute_dims(w)`` bindings, reading the re-laid-out parameter for ``v``."""

    def __init__(self, mod: tvm.IRModule, replaced: dict[relax.Var, relax.Var]) -> None:
        super().__init__(mod)
        self.replaced = replaced

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        value = binding.value
        if (
            isinstance(value, relax.Call)
            and isinstance(value.op, tvm.ir.Op)
            and value.op.name == "relax.permute_dims"
            and value.args[0] in self.replaced
        ):
            self.set_var_remap(binding.var, self.replaced[value.args[0]])
            return
        super().visit_var_binding_(binding)


def fold_weight_permutes(
    mod: tvm.IRModule, params: dict[str, np.ndarray]
) -> tuple[tvm.IRModule, dict[str, np.ndarray]]:
    """Transpose the weights that ``main`` only reads transposed, at compile time.

    Returns the module whose ``main`` takes those parameters in their transposed shape (same
    names) and the new values; the others are unchanged.
    """
    func = mod["main"]
    permutes = _weight_permutes(func, params)
    if not permutes:
        return mod, params
    values = dict(params)
    replaced = {}
    for var, axes in permutes.items():
        values[var.name] = np.ascontiguousarray(params[var.name].transpose(axes))
        ty = relax.TensorType(list(values[var.name].shape), var.ty.dtype)
        replaced[var] = relax.Var(var.name, ty)
    folder = _FoldPermutes(mod, replaced)
    body = folder.visit_expr(func).body
    new_params = [replaced.get(p, p) for p in func.params]
    new_func = relax.Function(new_params, body, func.ret_ty, func.is_pure, func.attrs)
    new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new_mod["main"] = new_func
    return new_mod, values


def to_channels_last(imported: ImportedModel) -> ImportedModel:
    """``imported`` with its convolutions and pools in NHWC and conv weights in HWIO.

    A model without an NCHW conv2d (an MLP, a transformer) comes back unchanged.
    """
    func = imported.mod["main"]
    if not _has_nchw_conv(func):
        return imported
    mod = relax.transform.ConvertLayout(DESIRED_LAYOUTS)(imported.mod)
    mod, params = fold_weight_permutes(mod, imported.params)
    mod = relax.transform.CanonicalizeBindings()(mod)
    mod = cancel_qdq_permutes(mod)  # a QDQ model's quantize chains channels-last too
    return dataclasses.replace(imported, mod=mod, params=params)


__all__ = ["DESIRED_LAYOUTS", "fold_weight_permutes", "to_channels_last"]
