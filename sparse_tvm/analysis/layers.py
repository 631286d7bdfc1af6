"""Find the layers of a Relax model whose weight is a constant: the candidates for sparsity.

A layer is a ``relax.matmul`` (ONNX MatMul and Gemm, the weight possibly behind a
``permute_dims`` for Gemm's transB) or a ``relax.nn.conv2d`` whose weight is one of the model's
weight parameters, together with the bias add and ReLU (or, where the back end's kernels take
one, GELU) that follow it when nothing else reads the intermediate values (the sparse kernel
fuses them).

Weights are reported in the (n, k) orientation used everywhere in sparse-tvm: n output features
by k input features (a MatMul's B transposed; a conv's (out, in*kh*kw) for NCHW / OIHW, its
(out, kh*kw*in) for NHWC / HWIO, the order of the im2col rows of each layout).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from sparse_tvm.analysis.constants import scalar_value
from sparse_tvm.analysis.quantized import (
    QdqTail,
    QuantizedOperands,
    dequantize_of,
    quantized_operands,
    requantize_of,
    with_output_quantize,
)


@dataclass(frozen=True)
class ConvGeometry:
    """The attributes of a conv2d layer.

    ``input_shape`` is ``(batch, channels, height, width)`` whatever the layout; ``layout`` is
    the graph's: ``"NCHW"`` (weight OIHW, the ONNX order) or ``"NHWC"`` (weight HWIO, what the
    CPU back ends convert CNNs to, see :mod:`sparse_tvm.transform.channels_last`).
    """

    input_shape: tuple[int, int, int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]
    dilation: tuple[int, int]
    groups: int
    output_hw: tuple[int, int]
    layout: str = "NCHW"

    @property
    def is_pointwise(self) -> bool:
        return (
            self.kernel == (1, 1)
            and self.strides == (1, 1)
            and self.padding == (0, 0, 0, 0)
            and self.groups == 1
        )

    @property
    def is_depthwise(self) -> bool:
        """One filter group per input channel (a MobileNet 3x3 conv)."""
        return self.groups > 1 and self.groups == self.input_shape[1]


@dataclass
class Layer:
    """One layer with a constant weight, as found in the Relax function.

    ``name`` is the weight parameter's name (the ONNX initializer name): the key of tuning
    records, layer timings, pruning exclusions and generated code. ``display_name`` is what the
    report calls the layer (the PyTorch module path or the ONNX node, see
    :mod:`sparse_tvm.analysis.layer_names`); '' when the graph names nothing.
    """

    name: str
    op: str  # "matmul" or "conv2d"
    weight: np.ndarray  # float32, (n, k)
    weight_shape: tuple[int, ...]  # as stored in the model
    m: int  # activation columns per batch item: tokens or output pixels (NHWC: of all items)
    batch: int  # NCHW conv batch; 1 for matmul and NHWC conv (all items' rows are columns)
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    call_var: relax.Var  # the binding var of the matmul / conv2d call
    end_var: relax.Var  # the binding var of the last fused op (bias add or relu)
    weight_var: relax.Var
    transposed: bool = False  # the model stores the weight as (n, k) already (Gemm transB)
    bias: np.ndarray | None = None
    relu: bool = False
    relu6: bool = False  # the ReLU is a ReLU6 (then relu is True too)
    gelu: bool = False  # a GELU (erf form) follows the bias instead of a ReLU
    conv: ConvGeometry | None = None
    dense_reason: str = ""  # non-empty: this layer cannot be compiled sparse, and why
    fused: list[str] = field(default_factory=list)
    display_name: str = ""
    # a quantized model's layer the int8 kernels can run (analysis/quantized.py), else None
    int8: QuantizedOperands | None = None

    @property
    def label(self) -> str:
        """The display name, else the weight name."""
        return self.display_name or self.name

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)  # type: ignore[return-value]

    def stored_weight(self) -> np.ndarray:
        """The weight as the model stores it (``weight_shape``), from the (n, k) view."""
        if self.op == "matmul":
            stored = self.weight if self.transposed else self.weight.T
            return np.ascontiguousarray(stored)
        if self.conv is not None and self.conv.layout == "NHWC":
            kh, kw, c_in, n = self.weight_shape
            return np.ascontiguousarray(self.weight.reshape(n, kh, kw, c_in).transpose(1, 2, 3, 0))
        return self.weight.reshape(self.weight_shape)

    @property
    def sparsity(self) -> float:
        return float(np.count_nonzero(self.weight == 0)) / max(1, self.weight.size)

    @property
    def sparse_capable(self) -> bool:
        return not self.dense_reason


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    """The static shape of a tensor-typed expression; None where it is not a tensor or symbolic."""
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    try:
        return tuple(int(s) for s in ty.shape)
    except (TypeError, ValueError):  # symbolic dims
        return None


def is_float32(expr: relax.Expr) -> bool:
    """Whether ``expr`` is a float32 tensor."""
    ty = expr.ty
    return isinstance(ty, relax.TensorType) and str(ty.dtype) == "float32"


def op_name(expr: relax.Expr | None) -> str:
    """``"relax.matmul"`` for a call of that operator, ``""`` for anything else."""
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return ""


class FuncIndex:
    """Bindings of a function's dataflow blocks: var -> value and var -> users."""

    def __init__(self, func: relax.Function) -> None:
        self.value: dict[relax.Var, relax.Expr] = {}
        self.users: dict[relax.Var, int] = {}
        self.outputs: set[relax.Var] = set()
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.value[binding.var] = binding.value
                    if not isinstance(binding.var, relax.DataflowVar):
                        self.outputs.add(binding.var)
            for var, users in relax.analysis.udchain(block).items():
                self.users[var] = self.users.get(var, 0) + len(users)

    def single_user(self, var: relax.Var) -> relax.Var | None:
        """The one binding var that reads ``var``, if exactly one does and var is internal."""
        if self.users.get(var, 0) != 1 or var in self.outputs:
            return None
        for other, value in self.value.items():
            if isinstance(value, relax.Call) and any(a.same_as(var) for a in value.args):
                return other
        return None


def _weight_of(
    expr: relax.Expr, weights: dict[relax.Var, np.ndarray], index: FuncIndex
) -> tuple[relax.Var, bool] | None:
    """The weight var behind ``expr`` (directly, or through a 2-D transpose)."""
    if isinstance(expr, relax.Var) and expr in weights:
        return expr, False
    value = index.value.get(expr) if isinstance(expr, relax.Var) else None
    if (
        value is not None
        and op_name(value) == "relax.permute_dims"
        and value.args[0] in weights
        and weights[value.args[0]].ndim == 2
    ):
        axes = value.attrs.axes
        if axes is None or [int(a) for a in axes] == [1, 0]:
            return value.args[0], True
    return None


def _constant_array(
    expr: relax.Expr, weights: dict[relax.Var, np.ndarray], index: FuncIndex
) -> np.ndarray | None:
    """The value behind ``expr``: a constant or a weight, maybe reshaped and transposed (a
    conv bias ``(n,)`` reshaped to ``(1, n, 1, 1)``, then to ``(1, 1, 1, n)`` for NHWC)."""
    if isinstance(expr, tvm.ir.expr.GenericConst):
        return expr.value.numpy()
    if not isinstance(expr, relax.Var):
        return None
    if expr in weights:
        return weights[expr]
    value = index.value.get(expr)
    op = op_name(value)
    if op not in ("relax.reshape", "relax.permute_dims"):
        return None
    inner = _constant_array(value.args[0], weights, index)
    if inner is None:
        return None
    if op == "relax.reshape":
        shape = static_shape(expr)
        return None if shape is None else inner.reshape(shape)
    axes = value.attrs.axes
    return inner.transpose(None if axes is None else [int(a) for a in axes])


def _bias_of(
    expr: relax.Expr,
    n: int,
    weights: dict[relax.Var, np.ndarray],
    index: FuncIndex,
    conv: ConvGeometry | None,
) -> np.ndarray | None:
    """A per-output-feature bias vector behind ``expr`` (a weight, maybe reshaped for NCHW)."""
    arr = _constant_array(expr, weights, index)
    if arr is None:
        return None
    if conv is None:
        shapes = {(n,), (1, n)}
    elif conv.layout == "NHWC":
        shapes = {(n,), (1, n), (1, 1, n), (1, 1, 1, n)}
    else:
        shapes = {(1, n, 1, 1), (n, 1, 1)}
    return arr.reshape(n) if arr.shape in shapes else None


def _fuse_epilogue(layer: Layer, weights, index: FuncIndex, gelu: bool) -> None:
    """Extend the layer over a following bias add and ReLU / ReLU6 (or, with ``gelu``, a
    GELU) that only it feeds."""
    n = layer.weight.shape[0]
    user = index.single_user(layer.end_var)
    if user is not None and op_name(index.value[user]) == "relax.add":
        a, b = index.value[user].args
        other = b if a.same_as(layer.end_var) else a
        bias = _bias_of(other, n, weights, index, layer.conv)
        if bias is not None and static_shape(user) == layer.output_shape:
            layer.bias, layer.end_var = bias.astype(np.float32), user
            layer.fused.append("bias")
    end, activation = activation_after(index, layer.end_var)
    if activation is not None:
        layer.relu, layer.relu6, layer.end_var = True, activation == "relu6", end
        layer.fused.append(activation)
    elif gelu and (end := gelu_after(index, layer.end_var, weights)) is not None:
        layer.gelu, layer.end_var = True, end
        layer.fused.append("gelu")


def _bound(
    index: FuncIndex,
    var: relax.Var,
    source: relax.Var,
    weights: dict[relax.Var, np.ndarray] | None = None,
) -> float | None:
    """The scalar constant that the binary op bound to ``var`` applies to ``source``."""
    a, b = index.value[var].args
    return scalar_value(b, weights) if a.same_as(source) else scalar_value(a, weights)


def activation_after(index: FuncIndex, var: relax.Var) -> tuple[relax.Var, str | None]:
    """The ReLU or ReLU6 that only ``var`` feeds: ``(its last var, "relu" | "relu6")``, else
    ``(var, None)``. A ReLU is ``nn.relu`` or ``maximum(x, 0)``; a ReLU6 is ``maximum(x, 0)``
    then ``minimum(x, 6)`` (how ONNX's ``Clip(0, 6)`` imports, see
    :mod:`sparse_tvm.frontend.onnx_converters`)."""
    user = index.single_user(var)
    name = op_name(index.value[user]) if user is not None else ""
    if name == "relax.nn.relu":
        return user, "relu"
    if name != "relax.maximum" or _bound(index, user, var) != 0.0:
        return var, None
    after = index.single_user(user)
    if (
        after is not None
        and op_name(index.value[after]) == "relax.minimum"
        and _bound(index, after, user) == 6.0
    ):
        return after, "relu6"
    return user, "relu"


def _near(value: float | None, expected: float) -> bool:
    return value is not None and abs(value - expected) <= 1e-5 * max(1.0, abs(expected))


def _product_of(index: FuncIndex, var: relax.Var, a: relax.Expr) -> relax.Var | None:
    """The one user of ``var`` when it is ``var * a`` (either order), else None."""
    user = index.single_user(var)
    if user is None or op_name(index.value[user]) != "relax.multiply":
        return None
    x, y = index.value[user].args
    return user if (x.same_as(var) and y.same_as(a)) or (x.same_as(a) and y.same_as(var)) else None


def _scaled_by(index: FuncIndex, var: relax.Var, factor: float, weights) -> relax.Var | None:
    """The one user of ``var`` when it is ``var * factor``, else None."""
    user = index.single_user(var)
    is_product = user is not None and op_name(index.value[user]) == "relax.multiply"
    return user if is_product and _near(_bound(index, user, var, weights), factor) else None


def _over_sqrt2(index: FuncIndex, var: relax.Var, weights) -> relax.Var | None:
    """The binding of ``var / sqrt 2`` or ``var * (1 / sqrt 2)``, if there is one."""
    for user, value in index.value.items():
        if not isinstance(value, relax.Call) or not any(a.same_as(var) for a in value.args):
            continue
        name = op_name(value)
        if name == "relax.divide" and value.args[0].same_as(var):
            if _near(scalar_value(value.args[1], weights), math.sqrt(2.0)):
                return user
        elif name == "relax.multiply" and _near(_bound(index, user, var, weights), math.sqrt(0.5)):
            return user
    return None


def gelu_after(
    index: FuncIndex, var: relax.Var, weights: dict[relax.Var, np.ndarray] | None = None
) -> relax.Var | None:
    """The last var of a GELU (erf form) of ``var`` that nothing else reads, else None:
    ``relax.nn.gelu``, or the ops an ONNX export writes, ``v * (0.5 * (erf(v / sqrt 2) + 1))``
    with the products in either order (``v / sqrt 2`` also as ``v * (1 / sqrt 2)``; the
    constants relax constants or one-element ``weights``)."""
    if var in index.outputs:
        return None
    user = index.single_user(var)
    if user is not None and op_name(index.value[user]) == "relax.nn.gelu":
        return user
    if index.users.get(var, 0) != 2:  # the erf's argument and the product with v
        return None
    scaled = _over_sqrt2(index, var, weights)
    erf = index.single_user(scaled) if scaled is not None else None
    if erf is None or op_name(index.value[erf]) != "relax.erf":
        return None
    plus = index.single_user(erf)
    if plus is None or op_name(index.value[plus]) != "relax.add":
        return None
    if not _near(_bound(index, plus, erf, weights), 1.0):
        return None
    half = _scaled_by(index, plus, 0.5, weights)
    if half is not None:  # v * (0.5 * (erf + 1))
        return _product_of(index, half, var)
    times_v = _product_of(index, plus, var)
    if times_v is not None:  # (v * (erf + 1)) * 0.5
        return _scaled_by(index, times_v, 0.5, weights)
    return None  # (v * 0.5) * (erf + 1) reads v from a third op: not matched


def _matmul_layer(var, call, weights, names, index, scales) -> Layer | None:
    found = _weight_of(call.args[1], weights, index)
    x_shape, out_shape = static_shape(call.args[0]), static_shape(var)
    if found is None or x_shape is None or out_shape is None or len(x_shape) < 2:
        return None
    weight_var, transposed = found
    w = weights[weight_var]
    if w.ndim != 2:
        return None
    w_nk = w if transposed else w.T
    layer = Layer(
        name=weight_var.name,
        display_name=names.get(weight_var.name, ""),
        op="matmul",
        weight=np.ascontiguousarray(w_nk, dtype=np.float32),
        weight_shape=tuple(w.shape),
        m=int(np.prod(x_shape[:-1])),
        batch=1,
        input_shape=x_shape,
        output_shape=out_shape,
        call_var=var,
        end_var=var,
        weight_var=weight_var,
        transposed=transposed,
    )
    if w.dtype != np.float32 or str(call.args[0].ty.dtype) != "float32":
        layer.dense_reason = f"dtype {w.dtype}: sparse kernels are float32"
    elif weight_var.name in scales:
        x = call.args[0]
        layer.int8 = quantized_operands(
            x, index.value.get(x) if isinstance(x, relax.Var) else None,
            layer.weight, scales[weight_var.name], transposed, weights,
        )  # fmt: skip
    return layer


_CONV_LAYOUTS = {("NCHW", "OIHW"), ("NHWC", "HWIO")}


def _conv_layer(var, call, weights, names, index, scales) -> Layer | None:
    weight_var = call.args[1]
    x_shape, out_shape = static_shape(call.args[0]), static_shape(var)
    if not (isinstance(weight_var, relax.Var) and weight_var in weights) or x_shape is None:
        return None
    attrs = call.attrs
    w = weights[weight_var]
    if w.ndim != 4 or out_shape is None or len(x_shape) != 4:
        return None
    layouts = (str(attrs.data_layout), str(attrs.kernel_layout))
    out_layout = str(attrs.out_layout) if attrs.out_layout else layouts[0]
    channels_last = layouts == ("NHWC", "HWIO")
    if channels_last:
        logical_x = (x_shape[0], x_shape[3], x_shape[1], x_shape[2])
        kernel, output_hw = (int(w.shape[0]), int(w.shape[1])), (out_shape[1], out_shape[2])
        w_nk = w.transpose(3, 0, 1, 2).reshape(w.shape[3], -1)
    else:
        logical_x = tuple(x_shape)
        kernel, output_hw = (int(w.shape[2]), int(w.shape[3])), (out_shape[2], out_shape[3])
        w_nk = w.reshape(w.shape[0], -1)
    pad = [int(p) for p in attrs.padding]
    pad = pad * 2 if len(pad) == 2 else pad
    geometry = ConvGeometry(
        input_shape=logical_x,
        kernel=kernel,
        strides=tuple(int(s) for s in attrs.strides),
        padding=tuple(pad),
        dilation=tuple(int(d) for d in attrs.dilation),
        groups=int(attrs.groups),
        output_hw=output_hw,
        layout=layouts[0],
    )
    pixels = output_hw[0] * output_hw[1]
    layer = Layer(
        name=weight_var.name,
        display_name=names.get(weight_var.name, ""),
        op="conv2d",
        weight=np.ascontiguousarray(w_nk, dtype=np.float32),
        weight_shape=tuple(w.shape),
        m=pixels * x_shape[0] if channels_last else pixels,
        batch=1 if channels_last else x_shape[0],
        input_shape=x_shape,
        output_shape=out_shape,
        call_var=var,
        end_var=var,
        weight_var=weight_var,
        conv=geometry,
    )
    if geometry.groups != 1:
        kind = "depthwise" if geometry.groups == logical_x[1] else "grouped"
        layer.dense_reason = f"{kind} conv (groups={geometry.groups}) stays dense"
    elif layouts not in _CONV_LAYOUTS or out_layout != layouts[0]:
        layer.dense_reason = f"layout {layouts[0]}/{layouts[1]} stays dense"
    elif w.dtype != np.float32:
        layer.dense_reason = f"dtype {w.dtype}: sparse kernels are float32"
    elif weight_var.name in scales:
        # the scale is per output channel of the ONNX (OIHW) weight: the (n, k) view's rows in
        # either layout (an HWIO weight is the OIHW one transposed)
        x = call.args[0]
        layer.int8 = quantized_operands(
            x, index.value.get(x) if isinstance(x, relax.Var) else None,
            layer.weight, scales[weight_var.name], True, weights,
        )  # fmt: skip
    return layer


def _qdq_tail(layer: Layer, index: FuncIndex, weights, gelu: bool) -> QdqTail | None:
    """The ``dequantize -> [bias] -> [activation] -> [quantize]`` after the layer's output
    quantize (:class:`~sparse_tvm.analysis.quantized.QdqTail`), else None."""
    ops = layer.int8
    end = index.single_user(ops.out)
    if end is None or not dequantize_of(index.value[end], ops, weights):
        return None
    n = layer.shape[0]
    bias = None
    user = index.single_user(end)
    if user is not None and op_name(index.value[user]) == "relax.add":
        a, b = index.value[user].args
        found = _bias_of(b if a.same_as(end) else a, n, weights, index, None)
        if found is not None and static_shape(user) == layer.output_shape:
            bias, end = found.astype(np.float32), user
    relu = relu6 = is_gelu = False
    after, activation = activation_after(index, end)
    if activation is not None:
        relu, relu6, end = True, activation == "relu6", after
    elif gelu and (after := gelu_after(index, end, weights)) is not None:
        is_gelu, end = True, after
    requant = None
    user = index.single_user(end)
    if user is not None and (found := requantize_of(index.value[user], weights)) is not None:
        requant, end = found, user
    return QdqTail(end, bias, relu, relu6, is_gelu, requant)


def find_layers(
    func: relax.Function,
    weights: dict[relax.Var, np.ndarray],
    names: dict[str, str] | None = None,
    *,
    gelu: bool = False,
    weight_scales: dict | None = None,
) -> list[Layer]:
    """Every matmul / conv2d of ``func`` whose weight is in ``weights``, in program order.

    Parameters
    ----------
    func
        The Relax function (usually ``mod["main"]``) with the weights as parameters.
    weights
        The weight parameters of ``func`` and their values.
    names
        Optional display names (``Layer.display_name``) by weight parameter name; the layer's
        ``name`` is always the parameter's own.
    gelu
        Fuse a GELU after a layer (and its bias) into it: for back ends whose kernels take one
        in their epilogue (``Backend.fuses_gelu``).
    weight_scales
        The scales of a quantized model's int8 weights by name (``ImportedModel.weight_scales``):
        matmul layers and channels-first convs with int8 operands get ``Layer.int8``
        (:mod:`.quantized`).
    """
    names = names or {}
    scales = weight_scales or {}
    index = FuncIndex(func)
    layers: list[Layer] = []
    for var, value in index.value.items():
        op = op_name(value)
        if op == "relax.matmul":
            layer = _matmul_layer(var, value, weights, names, index, scales)
        elif op == "relax.nn.conv2d":
            layer = _conv_layer(var, value, weights, names, index, scales)
        else:
            continue
        if layer is None:
            continue
        if layer.sparse_capable:
            _fuse_epilogue(layer, weights, index, gelu)
        if layer.int8 is not None:  # the output quantize after the layer and its epilogue
            user = index.single_user(layer.end_var)
            value = index.value.get(user) if user is not None else None
            layer.int8 = with_output_quantize(layer.int8, user, value, weights)
            if layer.int8.out is not None and not (layer.gelu or layer.relu6):
                tail = _qdq_tail(layer, index, weights, gelu)
                layer.int8 = dataclasses.replace(layer.int8, tail=tail)
        layers.append(layer)
    return layers
