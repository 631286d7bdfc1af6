"""Rewrites of an imported forward function into operators ``relax.transform.Gradient`` can
differentiate, run before ``DecomposeOpsForTraining`` (see
:func:`sparse_tvm.training.graph.differentiable`).

- ``batch_norm`` with ``training=False`` (an ONNX ``BatchNormalization`` exported in eval
  mode and not folded into a convolution): ``DecomposeOpsForTraining`` would decompose it
  with the statistics of the batch, which is not the function the model computes; here it
  becomes ``(x - running_mean) / sqrt(running_var + eps) * gamma + beta``.
- ``take`` with indices that are not one-dimensional (ONNX ``Gather`` with a scalar index, as
  in the q/k/v split of ``nn.MultiheadAttention``; an embedding lookup with a 2-D index):
  TVM's ``take_backward`` only handles 1-D indices, so the indices are flattened and the
  result reshaped, ``reshape(take(x, reshape(i, [-1]), axis), shape)``.
"""

from __future__ import annotations

import math

import tvm
from tvm import relax


def _static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = getattr(ty.shape, "values", None)
    if dims is None or not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
        return None
    return tuple(int(d) for d in dims)


def _is_float(expr: relax.Expr) -> bool:
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype).startswith(("float", "bfloat"))


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def visit_call_(self, call: relax.Call) -> relax.Expr:
        new = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op):
            return new
        if call.op.name == "relax.nn.batch_norm" and not bool(call.attrs.training):
            return self._inference_batch_norm(call, new.args)
        if call.op.name == "relax.take" and self._needs_flat_take(call):
            return self._flat_take(call, new.args)
        return new

    def _inference_batch_norm(self, call: relax.Call, args) -> relax.Expr:
        x, gamma, beta, mean, var = args
        attrs = call.attrs
        rank = int(call.args[0].ty.ndim)
        axis = int(attrs.axis) % rank
        dtype = str(call.args[0].ty.dtype)
        others = [i for i in range(rank) if i != axis]

        def per_channel(v: relax.Expr) -> relax.Expr:
            return self.builder_.emit(relax.op.expand_dims(v, others))

        eps = relax.const(float(attrs.epsilon), dtype)
        y = self.builder_.emit(x - per_channel(mean))
        y = self.builder_.emit(y / relax.op.sqrt(per_channel(var) + eps))
        if bool(attrs.scale):
            y = self.builder_.emit(y * per_channel(gamma))
        if bool(attrs.center):
            y = self.builder_.emit(y + per_channel(beta))
        return relax.Tuple([y, mean, var])

    @staticmethod
    def _needs_flat_take(call: relax.Call) -> bool:
        index_shape = _static_shape(call.args[1])
        return (
            index_shape is not None
            and len(index_shape) != 1
            and _static_shape(call) is not None
            and _is_float(call.args[0])
        )

    def _flat_take(self, call: relax.Call, args) -> relax.Expr:
        x, indices = args
        index_shape, out_shape = _static_shape(call.args[1]), _static_shape(call)
        flat = self.builder_.emit(relax.op.reshape(indices, [math.prod(index_shape)]))
        taken = self.builder_.emit(
            relax.op.take(x, flat, axis=call.attrs.axis, mode=str(call.attrs.mode))
        )
        return relax.op.reshape(taken, out_shape)


def rewrite_for_gradient(mod: tvm.IRModule) -> tvm.IRModule:
    """``mod`` with every Relax function rewritten as described in the module docstring."""
    rewriter = _Rewriter(mod)
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()
