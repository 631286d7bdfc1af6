"""The int8 operands of a layer of a quantized (QDQ) model, where it has them.

A QDQ model's linear layer reads ``dequantize(quantize(x))`` and a weight stored as symmetric
int8 (``frontend/fold_dequantize`` folds the weight's ``DequantizeLinear`` to the float weight
it computes and keeps its scale). The int8 kernels multiply the quantized activations by the
int8 weight instead, with exact int32 sums, and scale once at the end:

``y[m, n] = x_scale * w_scale[n] * sum_k (xq[m, k] - x_zero) * wq[n, k]``

which is what the QDQ graph computes (up to the float rounding of its sums). That needs

- the activation side: the layer's input is a ``relax.dequantize`` of a uint8 or int8 tensor
  with one scale and one zero point (per tensor);
- the weight side: a per-tensor scale or one per output feature (a scale per input feature
  cannot be taken out of the sum), and the float weight exactly ``q * scale`` with ``q`` in
  [-127, 127] (a weight a later pass changed, e.g. a folded batch norm, is not).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from tvm import relax

from sparse_tvm.analysis.constants import scalar_value

__all__ = [
    "QdqTail",
    "QuantizedOperands",
    "dequantize_of",
    "quantized_operands",
    "requantize_of",
    "with_output_quantize",
]


@dataclass(frozen=True)
class QuantizedOperands:
    """What an int8 kernel of the layer reads instead of the float operands."""

    x: relax.Expr  # the 8-bit activations (the dequantize's input), the layer's input shape
    # constants, or one-element tensors computed at run time (dynamic quantization)
    x_scale: float | relax.Expr
    x_zero: int | relax.Expr
    x_signed: bool  # int8 activations (else uint8)
    weight: np.ndarray  # int8, (n, k)
    weight_scale: np.ndarray  # float32, (n,)
    # the quantize (8-bit, per tensor) that alone reads the layer's output, if one does: the
    # kernel then writes its values itself (a quarter of the bytes)
    out: relax.Var | None = None
    out_scale: float = 0.0
    out_zero: int = 0
    out_signed: bool = False
    tail: QdqTail | None = None  # the float ops after the output quantize, if fusable

    @property
    def dynamic(self) -> bool:
        """Whether the activations' scale and zero point are computed at run time."""
        return not isinstance(self.x_scale, float)


@dataclass(frozen=True)
class QdqTail:
    """What a QDQ model computes after a layer's output quantize, up to the next quantize:
    ``dequantize`` (the same scale and zero point) -> [add a bias] -> [ReLU / ReLU6 / GELU]
    -> [``quantize``, 8-bit per tensor], each op read only by the next. ONNX exports a linear
    layer as MatMul + Add, and onnxruntime's quantizer quantizes the MatMul's output: the bias
    add and activation come after a quantize / dequantize pair. The int8 kernel computes the
    chain in its epilogue, rounding where the graph rounds."""

    end: relax.Var  # the chain's last var
    bias: np.ndarray | None = None  # float32 (n,)
    relu: bool = False
    relu6: bool = False
    gelu: bool = False
    requant: tuple[float, int, bool] | None = None  # (scale, zero point, signed)

    @property
    def fused(self) -> list[str]:
        """What the chain holds, for the report."""
        activation = "relu6" if self.relu6 else "relu" if self.relu else "gelu" if self.gelu else ""
        steps = ["dequantize", "bias" if self.bias is not None else "", activation]
        steps.append("quantize" if self.requant else "")
        return [step for step in steps if step]


def _runtime_scalar(expr: relax.Expr, dtypes: tuple[str, ...]) -> bool:
    """Whether ``expr`` is a one-element tensor of one of ``dtypes`` (computed at run time)."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or str(ty.dtype) not in dtypes or ty.shape is None:
        return False
    try:
        return int(np.prod([int(d) for d in ty.shape])) == 1
    except (TypeError, ValueError):
        return False


def _per_tensor_8bit(
    value: relax.Expr | None,
    op: str,
    weights: dict[relax.Var, np.ndarray],
    runtime: bool = False,
) -> tuple[relax.Expr, float | relax.Expr, int | relax.Expr, bool] | None:
    """``(data, scale, zero point, signed)`` of a per-tensor uint8 or int8 ``op``
    ("relax.quantize" / "relax.dequantize") call ``value``, else None. With ``runtime``, a
    scale and zero point computed at run time (one-element tensors: a dynamically quantized
    model's) are the expressions themselves."""
    if not isinstance(value, relax.Call) or getattr(value.op, "name", "") != op:
        return None
    if len(value.args) != 3:
        return None
    data, scale, zero = value.args
    quantized = data if op == "relax.dequantize" else value
    if not isinstance(quantized.ty, relax.TensorType):
        return None
    dtype = str(quantized.ty.dtype)
    if dtype not in ("uint8", "int8"):
        return None
    scale_value, zero_value = scalar_value(scale, weights), scalar_value(zero, weights)
    if scale_value is None and zero_value is None and runtime:
        if _runtime_scalar(scale, ("float32",)) and _runtime_scalar(zero, (dtype,)):
            return data, scale, zero, dtype == "int8"
        return None
    if scale_value is None or zero_value is None or not float(scale_value) > 0:
        return None
    return data, float(np.float32(scale_value)), int(zero_value), dtype == "int8"


def dequantize_of(
    value: relax.Expr | None, ops: QuantizedOperands, weights: dict[relax.Var, np.ndarray]
) -> bool:
    """Whether ``value`` is the ``dequantize`` of the layer's output quantize (same scale and
    zero point)."""
    side = _per_tensor_8bit(value, "relax.dequantize", weights)
    return (
        side is not None
        and side[0].same_as(ops.out)
        and side[1] == ops.out_scale
        and side[2] == ops.out_zero
    )


def requantize_of(
    value: relax.Expr | None, weights: dict[relax.Var, np.ndarray]
) -> tuple[float, int, bool] | None:
    """``(scale, zero point, signed)`` of a per-tensor 8-bit ``quantize`` call, else None."""
    side = _per_tensor_8bit(value, "relax.quantize", weights)
    return None if side is None else side[1:]


def _int8_weight(w_nk: np.ndarray, scale: Any, transposed: bool) -> tuple | None:
    """``(q, per-row scale)`` of an (n, k) float weight quantized as ``scale`` says, else None."""
    n = w_nk.shape[0]
    values = np.asarray(scale.scale, np.float32)
    n_axis = 0 if transposed else 1  # the stored weight's axis of the output features
    if values.ndim == 0 or values.size == 1:
        per_row = np.full(n, values.reshape(()), np.float32)
    elif values.shape == (n,) and scale.axis == n_axis:
        per_row = values
    else:
        return None
    if not (per_row > 0).all():
        return None
    q = np.rint(w_nk / per_row[:, None])
    if np.abs(q).max(initial=0) > 127:
        return None
    q = q.astype(np.int8)
    if not np.array_equal(q.astype(np.float32) * per_row[:, None], w_nk):
        return None
    return q, per_row


def quantized_operands(
    x: relax.Expr,
    x_value: relax.Expr | None,
    w_nk: np.ndarray,
    scale: Any,
    transposed: bool,
    weights: dict[relax.Var, np.ndarray],
) -> QuantizedOperands | None:
    """The int8 operands of a matmul layer reading ``x`` (bound to ``x_value``) with the (n, k)
    weight ``w_nk`` quantized as ``scale`` (a :class:`WeightScale`, or None), else None."""
    if scale is None:
        return None
    x_side = _per_tensor_8bit(x_value, "relax.dequantize", weights, runtime=True)
    if x_side is None:
        return None
    found = _int8_weight(w_nk, scale, transposed)
    if found is None:
        return None
    return QuantizedOperands(*x_side, *found)


def with_output_quantize(
    operands: QuantizedOperands,
    user: relax.Var | None,
    user_value: relax.Expr | None,
    weights: dict[relax.Var, np.ndarray],
) -> QuantizedOperands:
    """``operands`` with the output quantize ``user`` (the one reader of the layer's output,
    bound to ``user_value``) where it is a per-tensor 8-bit one."""
    found = requantize_of(user_value, weights)
    if user is None or found is None:
        return operands
    scale, zero, signed = found
    return dataclasses.replace(
        operands, out=user, out_scale=scale, out_zero=zero, out_signed=signed
    )
