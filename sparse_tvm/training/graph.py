"""The training graph: the imported forward function and a loss, in Relax.

``build_loss_function`` returns ``loss(inputs..., weights..., y, hook inputs...)`` whose first
output is the scalar objective; ``relax.transform.Gradient`` turns it into ``loss_adjoint``.
The forward function stays as imported; a method's :class:`~sparse_tvm.training.hooks.
TrainingHooks` may replace a weight ``W`` in the body by an expression of it (L0 pruning:
``W * z``, the hard-concrete gate) and add penalty terms to the objective.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.errors import TrainingError
from sparse_tvm.training.gradients import (
    describe_op,
    locate_op,
    missing_gradient_op,
    register_missing_gradients,
)
from sparse_tvm.training.hooks import TrainingHooks
from sparse_tvm.training.rewrite import rewrite_for_gradient


def differentiable(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrite what TVM cannot differentiate as imported (inference batch_norm, ``take`` with
    scalar indices: :mod:`sparse_tvm.training.rewrite`), then decompose the operators TVM
    differentiates only in parts (layer_norm)."""
    register_missing_gradients()
    return relax.transform.DecomposeOpsForTraining()(rewrite_for_gradient(mod))


def _const(value: np.ndarray | float, dtype: str = "float32") -> relax.Constant:
    return relax.const(np.asarray(value, dtype), dtype)


def build_loss_function(
    forward: relax.Function,
    objective: str,
    hooks: TrainingHooks | None = None,
) -> tuple[relax.Function, list[str]]:
    """The scalar training objective around ``forward`` (an imported, decomposed ``main``).

    Parameters
    ----------
    forward
        ``main(inputs..., weights...)``; its first output is the prediction.
    objective
        ``"cross_entropy"`` (``y`` is one-hot over the last axis of the prediction) or
        ``"mse"`` (``y`` is the target of the prediction).
    hooks
        A method's hooks: their ``loss_inputs`` follow ``y``; ``emit_loss_terms`` replaces
        weights, adds penalties to the objective and outputs to watch.

    Returns
    -------
    function, parameter names
        ``loss(inputs..., weights..., y, hook inputs...) -> (objective, task loss, hook
        outputs...)``; the names are those of the parameters in order.
    """
    hooks = hooks or TrainingHooks()
    func = relax.utils.copy_with_new_vars(forward)
    params = list(func.params)
    by_name = {p.name: p for p in params}
    out_ty = func.ret_ty
    if isinstance(out_ty, relax.TupleType):
        out_ty = out_ty.fields[0]
    y = relax.Var("y", relax.TensorType(out_ty.shape, out_ty.dtype))
    extra = [relax.Var(i.name, relax.TensorType(i.shape, "float32")) for i in hooks.loss_inputs()]
    all_params = params + [y] + extra

    bb = relax.BlockBuilder()
    with bb.function("loss", all_params, {"global_symbol": "loss"}):
        with bb.dataflow():
            terms = hooks.emit_loss_terms(bb, by_name, {v.name: v for v in extra})
            replaced = {by_name[name]: expr for name, expr in terms.weights.items()}
            body = func.body
            if replaced:
                body = _substitute(func, replaced)
            for block in body.blocks:
                for binding in block.bindings:
                    bb.emit_normalized(binding)
            pred = body.body
            if isinstance(pred.ty, relax.TupleType):
                pred = bb.emit(relax.TupleGetItem(pred, 0))
            if objective == "cross_entropy":
                log_p = bb.emit(relax.op.nn.log_softmax(pred, axis=-1))
                rows = int(np.prod([int(d) for d in out_ty.shape][:-1]))
                task = bb.emit(
                    relax.op.divide(relax.op.negative(relax.op.sum(y * log_p)), _const(rows))
                )
            elif objective == "mse":
                diff = bb.emit(pred - y)
                task = bb.emit(relax.op.mean(diff * diff))
            else:
                raise ValueError(f"unknown objective {objective!r}")
            total = task
            for penalty in terms.penalties:
                total = bb.emit(total + penalty)
            # Gradient wants the objective as a field of the returned tuple expression
            outs = [bb.emit_output(v) for v in (total, task, *terms.outputs)]
        bb.emit_func_output(relax.Tuple(outs))
    return bb.get()["loss"], [p.name for p in all_params]


def _substitute(func: relax.Function, replaced: dict[relax.Var, relax.Expr]) -> relax.SeqExpr:
    """``func``'s body with the parameters in ``replaced`` replaced by the given expressions."""
    return func.bind_params(replaced).body


def gradient_module(
    forward_mod: tvm.IRModule,
    objective: str,
    trainable: list[str],
    hooks: TrainingHooks | None = None,
    layer_of: Callable[[str], str] = str,
) -> tuple[tvm.IRModule, list[str], list[str]]:
    """``forward_mod`` with ``loss`` and ``loss_adjoint`` (gradients of the ``trainable``
    weights and of the hooks' trained loss inputs) added; returns the module, the ``loss``
    parameter names and the names of the gradients' parameters, in ``loss_adjoint`` order.

    An operator without a gradient raises :class:`TrainingError` naming it and the layer it
    belongs to (``layer_of`` turns a weight name into the layer's name)."""
    hooks = hooks or TrainingHooks()
    mod = differentiable(forward_mod)
    loss, names = build_loss_function(mod["main"], objective, hooks)
    mod["loss"] = loss
    wanted = set(trainable) | {i.name for i in hooks.loss_inputs() if i.trained}
    require = [p for p in mod["loss"].params if p.name in wanted]
    try:
        mod = relax.transform.Gradient("loss", require_grads=require)(mod)
    except RuntimeError as error:  # tvm.error.InternalError
        op = missing_gradient_op(error)
        if op is None:
            raise
        where = locate_op(mod["loss"], op, set(trainable))
        place = f" ({where[0]} layer {layer_of(where[1])})" if where else ""
        raise TrainingError(
            f"fine-tuning needs the gradient of {describe_op(mod['loss'], op)}{place}, which "
            "TVM does not have: prune without fine-tuning (method='magnitude', CLI --method "
            "magnitude), or export the model with another operator there"
        ) from None
    return mod, names, [p.name for p in require]
