"""Cancel the transposes ``ConvertLayout`` leaves around a channels-last QDQ CNN's quantize ops.

TVM's ``ConvertLayout`` has no layout rule for ``relax.quantize`` / ``relax.dequantize`` (their
``axis`` attribute names a channel axis), so in a QDQ model converted to NHWC every conv's
output goes back to NCHW for its quantize / dequantize / ReLU chain and forward to NHWC for
the next conv: two full transposes of each activation, float32 ones included, between every
pair of convs. With per-tensor scales and zero points (what a QDQ model's activations have)
those ops are elementwise in any layout, and so are ReLU, clip and a cast; a max pool only
needs its ``layout`` attribute. So a ``permute_dims`` after such a chain is moved up through
it (each op rebuilt on the permuted input) until it meets the inverse ``permute_dims`` the
chain started from, and both go: the chain then runs channels-last, and the conv reads the
``dequantize`` of its 8-bit input directly. Chains whose values another op also reads stay
as they are (moving the transpose would compute them twice), as do chains that end in
anything else.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import static_shape

__all__ = ["cancel_qdq_permutes"]

_ELEMENTWISE = {"relax.nn.relu", "relax.clip", "relax.astype"}
_QDQ = {"relax.quantize", "relax.dequantize"}
_NCHW_TO_NHWC = (0, 2, 3, 1)


def _op_name(value) -> str | None:
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
        return value.op.name
    return None


def _axes(call: relax.Call) -> tuple[int, ...] | None:
    axes = call.attrs.axes
    return None if axes is None else tuple(int(a) for a in axes)


def _scalar(expr: relax.Expr) -> bool:
    """A per-tensor scale or zero point: one value."""
    shape = static_shape(expr)
    return shape is not None and int(np.prod(shape, dtype=np.int64)) == 1


def _uses(func: relax.Function) -> dict[relax.Var, int]:
    counts: dict[relax.Var, int] = {}

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    for block in func.body.blocks:
        for binding in block.bindings:
            relax.analysis.post_order_visit(binding.value, visit)
    relax.analysis.post_order_visit(func.body.body, visit)
    return counts


@mutator
class _CancelPermutes(PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function) -> None:
        super().__init__(mod)
        self.uses = _uses(func)
        self.values: dict[relax.Var, relax.Expr] = {}

    def visit_var_binding_(self, binding: relax.VarBinding) -> None:
        self.values[binding.var] = binding.value
        value = binding.value
        if _op_name(value) == "relax.permute_dims" and (axes := _axes(value)) is not None:
            raised = self._raised(value.args[0], axes)
            if raised is not None:
                self.set_var_remap(binding.var, raised)
                return
        super().visit_var_binding_(binding)

    def _raised(self, expr: relax.Expr, axes: tuple[int, ...]) -> relax.Expr | None:
        """``permute_dims(expr, axes)`` without that transpose, where the chain behind
        ``expr`` starts from the inverse one (module doc); else None."""
        value = self.values.get(expr) if isinstance(expr, relax.Var) else None
        name = _op_name(value)
        if name is None:
            return None
        if name == "relax.permute_dims":
            inner = _axes(value)
            if inner is not None and tuple(inner[a] for a in axes) == tuple(range(len(axes))):
                return self.visit_expr(value.args[0])
            return None
        if self.uses.get(expr, 0) != 1:
            return None
        if name in _QDQ and not (_scalar(value.args[1]) and _scalar(value.args[2])):
            return None
        if name == "relax.nn.max_pool2d" and not (
            axes == _NCHW_TO_NHWC and str(value.attrs.layout) == "NCHW"
        ):
            return None
        if name not in _ELEMENTWISE | _QDQ | {"relax.nn.max_pool2d"}:
            return None
        source = self._raised(value.args[0], axes)
        if source is None:
            return None
        rest = [self.visit_expr(a) for a in value.args[1:]]
        return self.builder_.emit(self._rebuilt(value, source, rest, axes))

    @staticmethod
    def _rebuilt(value: relax.Call, source, rest, axes: tuple[int, ...]) -> relax.Expr:
        name = value.op.name
        attrs = value.attrs
        if name in _QDQ:
            axis = axes.index(int(attrs.axis) % len(axes))  # per tensor: where C went
            build = relax.op.quantize if name == "relax.quantize" else relax.op.dequantize
            return build(source, *rest, axis=axis, out_dtype=str(attrs.out_dtype))
        if name == "relax.nn.max_pool2d":
            return relax.op.nn.max_pool2d(
                source, attrs.pool_size, attrs.strides, attrs.padding, attrs.dilation,
                bool(attrs.ceil_mode), bool(attrs.count_include_pad), "NHWC", "NHWC",
            )  # fmt: skip
        return relax.Call(value.op, [source, *rest], attrs, value.ty_args)


def cancel_qdq_permutes(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with the inverse transposes around its per-tensor QDQ chains gone (module
    doc); the chains' old bindings are removed as dead code."""
    func = mod["main"]
    mutator_ = _CancelPermutes(mod, func)
    new_func = mutator_.visit_expr(func)
    new_mod = tvm.IRModule(dict(mod.functions_items()), attrs=mod.attrs)
    new_mod["main"] = new_func
    return relax.transform.DeadCodeElimination(["main"])(new_mod)
