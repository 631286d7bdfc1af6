"""Optimizer steps from ``tvm.relax.training.optimizer``, with a learning rate set per step.

TVM's optimizers bake ``lr`` into the function as a constant. ``add_step_function`` builds
the optimizer with ``lr = 1`` (a "unit step" ``p1 = p - d``) and wraps it:
``step(params, grads, state, lr, masks...) = (p + lr * (p1 - p)) * mask``. For SGD with
momentum and for Adam the update is linear in ``lr``, so this is exactly the step at ``lr``;
one compiled function serves every point of a learning-rate schedule. Masks keep pruned
weights at zero after every update.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.training import optimizer as tvm_optimizer

from sparse_tvm.errors import UsageError

OPTIMIZERS = ("sgd", "adam")


class _Adam(tvm_optimizer.Adam):
    """TVM 0.27's ``Adam.init`` passes a ``DataType`` to numpy; give it the dtype string."""

    def _set_params_and_dtype(self, params: list[relax.Var]) -> None:
        super()._set_params_and_dtype(params)
        self.dtype = str(self.dtype)


def make_optimizer(name: str, momentum: float = 0.9, weight_decay: float = 0.0):
    """A TVM optimizer at unit learning rate: ``"sgd"`` (momentum) or ``"adam"``."""
    if name == "sgd":
        return tvm_optimizer.MomentumSGD(1.0, momentum, weight_decay=weight_decay)
    if name == "adam":
        return _Adam(1.0, weight_decay=weight_decay)
    raise UsageError(f"optimizer '{name}' is not one of {', '.join(OPTIMIZERS)}")


def add_step_function(
    mod: tvm.IRModule,
    name: str,
    optimizer,
    params: list[relax.Var],
    masked: list[bool],
) -> tvm.IRModule:
    """Add ``name(params, grads, state, lr, mask_i...)`` (one mask per ``masked`` param) and
    the unit-step optimizer ``name + "_unit"`` to ``mod``; ``optimizer.state`` is the initial
    state afterwards."""
    fresh = [relax.Var(p.name, p.ty) for p in params]
    optimizer.init(fresh)
    unit = optimizer.get_function()
    bb = relax.BlockBuilder(mod)
    unit_gv = bb.add_func(unit.with_attr("global_symbol", f"{name}_unit"), f"{name}_unit")
    param_var, grad_var, state_var = (relax.Var(p.name, p.ty) for p in unit.params)
    dtype = str(fresh[0].ty.dtype)
    lr = relax.Var("lr", relax.TensorType((), dtype))
    masks = [relax.Var(f"{p.name}.mask", p.ty) for p, m in zip(fresh, masked) if m]
    with bb.function(name, [param_var, grad_var, state_var, lr, *masks]):
        with bb.dataflow():
            out = bb.emit(relax.Call(unit_gv, [param_var, grad_var, state_var]))
            unit_params = bb.emit(relax.TupleGetItem(out, 0))
            new_state = bb.emit(relax.TupleGetItem(out, 1))
            new_params, next_mask = [], iter(masks)
            for i, is_masked in enumerate(masked):
                p = bb.emit(relax.TupleGetItem(param_var, i))
                p1 = bb.emit(relax.TupleGetItem(unit_params, i))
                value = bb.emit(p + lr * (p1 - p))
                if is_masked:
                    value = bb.emit(value * next(next_mask))
                new_params.append(value)
            result = bb.emit_output(relax.Tuple([relax.Tuple(new_params), new_state]))
        bb.emit_func_output(result)
    return bb.get()


def lr_at(schedule: str, base: float, step: int, total: int, warmup: int = 0) -> float:
    """Learning rate at ``step`` of ``total``: ``"constant"``, ``"cosine"`` (to 0) or
    ``"linear"`` (to 0), after ``warmup`` linear warm-up steps."""
    if warmup and step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return base * (1.0 - progress)
    raise UsageError(f"lr schedule '{schedule}' is not one of constant, cosine, linear")


def scalar(value: float, dtype: str = "float32") -> tvm.runtime.Tensor:
    return tvm.runtime.tensor(np.asarray(value, dtype))
