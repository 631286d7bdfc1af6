"""``SplitFullReductions``: a reduction of a whole tensor to one value, in two steps.

``max`` / ``min`` / ``sum`` over every axis of a large tensor (a dynamically quantized model's
``DynamicQuantizeLinear`` takes the min and the max of each layer's input to choose its scale)
is one loop that TVM's CPU schedules run on one thread, element by element: 215 us each for a
128 x 3072 activation, more than the int8 layer after it. Here it becomes a reduction over the
last axis of a (rows, columns) view, which the CPU pipeline's row-reduction rule runs in
parallel over rows with vector partial results, then the same reduction of the short column of
row results. Exact for ``max`` / ``min``; a ``sum`` adds in another order (float rounding).
"""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.expr_functor import PyExprMutator, mutator

from sparse_tvm.analysis.layers import static_shape

__all__ = ["SplitFullReductions"]

_OPS = {"relax.max": relax.op.max, "relax.min": relax.op.min, "relax.sum": relax.op.sum}
MIN_ELEMENTS = 4096  # smaller reductions are not worth two kernels
ROW = 256  # the row length of a tensor whose last axis is too short or all there is


def _rows_columns(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (rows, columns) view to reduce by rows, else None."""
    size = math.prod(shape)
    if size < MIN_ELEMENTS:
        return None
    last = shape[-1] if shape else 1
    if len(shape) >= 2 and size // last >= 2 and last >= 16:
        return size // last, last
    if size % ROW == 0:
        return size // ROW, ROW
    return None


def _full(call: relax.Call, ndim: int) -> bool:
    """Whether the reduction call covers every axis."""
    axes = call.attrs.axis
    if axes is None:
        return True
    return sorted(int(a) % ndim for a in axes) == list(range(ndim))


@mutator
class _Splitter(PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        reduce = _OPS.get(getattr(call.op, "name", ""))
        if reduce is None or not call.args:
            return call
        x = call.args[0]
        shape = static_shape(x)
        if shape is None or not shape or not _full(call, len(shape)):
            return call
        view = _rows_columns(shape)
        if view is None:
            return call
        keepdims = bool(call.attrs.keepdims)
        rows = self.builder_.emit(reduce(relax.op.reshape(x, view), axis=[1]))
        total = reduce(rows, axis=[0], keepdims=False)
        if keepdims:
            return relax.op.reshape(self.builder_.emit(total), [1] * len(shape))
        return total


@tvm.transform.module_pass(opt_level=0, name="SplitFullReductions")
class SplitFullReductions:
    """Rewrite ``max`` / ``min`` / ``sum`` of a whole large static tensor in every Relax
    function into a row reduction then a reduction of the rows' results (module doc)."""

    def transform_module(self, mod: IRModule, _ctx: tvm.transform.PassContext) -> IRModule:
        rewriter = _Splitter(mod)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get()
