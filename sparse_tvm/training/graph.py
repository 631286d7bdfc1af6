"""The training graph: the imported forward function, hard-concrete gates and a loss, in Relax.

``build_loss_function`` returns ``loss(inputs..., weights..., y, [log_alpha, noise, lam]...)``
whose first output is the scalar objective; ``relax.transform.Gradient`` turns it into
``loss_adjoint``. The forward function stays as imported; a gated weight ``W`` is replaced in
the body by ``W * z`` where ``z`` is the hard-concrete gate of Louizos, Welling & Kingma (2018),
expanded from its blocks to the (n, k) view and back to the stored layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.errors import SparseTVMError
from sparse_tvm.pruning.weights import PrunableWeight
from sparse_tvm.training.gradients import (
    describe_op,
    locate_op,
    missing_gradient_op,
    register_missing_gradients,
)
from sparse_tvm.training.rewrite import rewrite_for_gradient

# hard-concrete constants of Louizos et al. (2018)
BETA, GAMMA, ZETA = 2.0 / 3.0, -0.1, 1.1


@dataclass(frozen=True)
class Gate:
    """An L0 gate per (r, c) block of one weight's (n, k) view."""

    weight: PrunableWeight
    nk_shape: tuple[int, int]
    stored_shape: tuple[int, ...]
    block: tuple[int, int]

    @property
    def grid(self) -> tuple[int, int]:
        (n, k), (r, c) = self.nk_shape, self.block
        return -(-n // r), -(-k // c)

    def block_sizes(self) -> np.ndarray:
        """Weights per block (edge blocks are smaller), shape ``grid``."""
        (n, k), (r, c) = self.nk_shape, self.block
        rows = np.minimum(r, n - np.arange(self.grid[0]) * r)
        cols = np.minimum(c, k - np.arange(self.grid[1]) * c)
        return np.outer(rows, cols).astype(np.float32)

    def expand(self, per_block: np.ndarray) -> np.ndarray:
        """Per-block values -> the (n, k) view."""
        (n, k), (r, c) = self.nk_shape, self.block
        return np.repeat(np.repeat(per_block, r, axis=0), c, axis=1)[:n, :k]


def hard_concrete_eval(log_alpha: np.ndarray) -> np.ndarray:
    """The deterministic test-time gate ``clip(sigmoid(log_alpha) (zeta - gamma) + gamma, 0, 1)``."""
    s = 1.0 / (1.0 + np.exp(-log_alpha))
    return np.clip(s * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def prob_nonzero(log_alpha: np.ndarray) -> np.ndarray:
    """P(z != 0) of a hard-concrete gate: the expected L0 norm per gate."""
    return 1.0 / (1.0 + np.exp(-(log_alpha - BETA * math.log(-GAMMA / ZETA))))


def differentiable(mod: tvm.IRModule) -> tvm.IRModule:
    """Rewrite what TVM cannot differentiate as imported (inference batch_norm, ``take`` with
    scalar indices: :mod:`sparse_tvm.training.rewrite`), then decompose the operators TVM
    differentiates only in parts (layer_norm)."""
    register_missing_gradients()
    return relax.transform.DecomposeOpsForTraining()(rewrite_for_gradient(mod))


def _const(value: np.ndarray | float, dtype: str = "float32") -> relax.Constant:
    return relax.const(np.asarray(value, dtype), dtype)


def _emit_gate(bb: relax.BlockBuilder, gate: Gate, log_alpha, noise) -> tuple:
    """Emit ``z`` in the stored layout and the expected density of one gate."""
    s = bb.emit(relax.op.sigmoid(relax.op.divide(noise + log_alpha, _const(BETA))))
    z = bb.emit(relax.op.clip(s * _const(ZETA - GAMMA) + _const(GAMMA), 0.0, 1.0))
    (n, k), (nb, kb) = gate.nk_shape, gate.grid
    if gate.block != (1, 1):
        # one-hot expansion matrices: matmul has a gradient, repeat does not
        rows = np.repeat(np.eye(nb, dtype=np.float32), gate.block[0], axis=0)[:n]
        cols = np.repeat(np.eye(kb, dtype=np.float32), gate.block[1], axis=0)[:k]
        z = bb.emit(relax.op.matmul(relax.op.matmul(_const(rows), z), _const(cols.T)))
    w = gate.weight
    if w.op == "Conv":
        z = bb.emit(relax.op.reshape(z, gate.stored_shape))
    elif w.transposed:
        z = bb.emit(relax.op.permute_dims(z, [1, 0]))
    shift = _const(BETA * math.log(-GAMMA / ZETA))
    p = relax.op.sigmoid(relax.op.subtract(log_alpha, shift))
    density = bb.emit(
        relax.op.divide(relax.op.sum(p * _const(gate.block_sizes())), _const(float(n * k)))
    )
    return z, density


def build_loss_function(
    forward: relax.Function,
    objective: str,
    gates: list[Gate] = (),
) -> tuple[relax.Function, list[str]]:
    """The scalar training objective around ``forward`` (an imported, decomposed ``main``).

    Parameters
    ----------
    forward
        ``main(inputs..., weights...)``; its first output is the prediction.
    objective
        ``"cross_entropy"`` (``y`` is one-hot over the last axis of the prediction) or
        ``"mse"`` (``y`` is the target of the prediction).
    gates
        Weights to gate; each adds the parameters ``<name>.log_alpha``, ``<name>.noise``
        (logit of the uniform sample) and ``<name>.lambda`` (penalty weight, a scalar).

    Returns
    -------
    function, parameter names
        ``loss(inputs..., weights..., y, gate parameters...) -> (objective, task loss,
        density per gate...)``; the names are those of the parameters in order.
    """
    func = relax.utils.copy_with_new_vars(forward)
    params = list(func.params)
    by_name = {p.name: p for p in params}
    out_ty = func.ret_ty
    if isinstance(out_ty, relax.TupleType):
        out_ty = out_ty.fields[0]
    y = relax.Var("y", relax.TensorType(out_ty.shape, out_ty.dtype))
    gate_vars = []
    for gate in gates:
        grid = gate.grid
        gate_vars.append(
            (
                relax.Var(f"{gate.weight.name}.log_alpha", relax.TensorType(grid, "float32")),
                relax.Var(f"{gate.weight.name}.noise", relax.TensorType(grid, "float32")),
                relax.Var(f"{gate.weight.name}.lambda", relax.TensorType((), "float32")),
            )
        )
    all_params = params + [y] + [v for triple in gate_vars for v in triple]

    bb = relax.BlockBuilder()
    with bb.function("loss", all_params, {"global_symbol": "loss"}):
        with bb.dataflow():
            replaced, densities = {}, []
            for gate, (log_alpha, noise, _) in zip(gates, gate_vars):
                z, density = _emit_gate(bb, gate, log_alpha, noise)
                weight = by_name[gate.weight.name]
                replaced[weight] = bb.emit(relax.op.multiply(weight, z))
                densities.append(density)
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
            for (_, _, lam), density in zip(gate_vars, densities):
                total = bb.emit(total + lam * density)
            # Gradient wants the objective as a field of the returned tuple expression
            outs = [bb.emit_output(v) for v in (total, task, *densities)]
        bb.emit_func_output(relax.Tuple(outs))
    return bb.get()["loss"], [p.name for p in all_params]


def _substitute(func: relax.Function, replaced: dict[relax.Var, relax.Expr]) -> relax.SeqExpr:
    """``func``'s body with the parameters in ``replaced`` replaced by the given expressions."""
    return func.bind_params(replaced).body


def gradient_module(
    forward_mod: tvm.IRModule,
    objective: str,
    trainable: list[str],
    gates: list[Gate] = (),
    layer_of: Callable[[str], str] = str,
) -> tuple[tvm.IRModule, list[str], list[str]]:
    """``forward_mod`` with ``loss`` and ``loss_adjoint`` (gradients of the ``trainable``
    weights and of every gate's ``log_alpha``) added; returns the module, the ``loss``
    parameter names and the names of the gradients' parameters, in ``loss_adjoint`` order.

    An operator without a gradient raises :class:`SparseTVMError` naming it and the layer it
    belongs to (``layer_of`` turns a weight name into the layer's name)."""
    mod = differentiable(forward_mod)
    loss, names = build_loss_function(mod["main"], objective, gates)
    mod["loss"] = loss
    wanted = set(trainable) | {f"{g.weight.name}.log_alpha" for g in gates}
    require = [p for p in mod["loss"].params if p.name in wanted]
    try:
        mod = relax.transform.Gradient("loss", require_grads=require)(mod)
    except RuntimeError as error:  # tvm.error.InternalError
        op = missing_gradient_op(error)
        if op is None:
            raise
        where = locate_op(mod["loss"], op, set(trainable))
        place = f" ({where[0]} layer {layer_of(where[1])})" if where else ""
        raise SparseTVMError(
            f"fine-tuning needs the gradient of {describe_op(mod['loss'], op)}{place}, which "
            "TVM does not have: prune without fine-tuning (method='magnitude', CLI --method "
            "magnitude), or export the model with another operator there"
        ) from None
    return mod, names, [p.name for p in require]
