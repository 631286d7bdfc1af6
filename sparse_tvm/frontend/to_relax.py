"""Import an ONNX model into a Relax IRModule whose weights are named parameters."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import tvm
from tvm import relax
from tvm.relax.frontend import detach_params
from tvm.relax.frontend.onnx import from_onnx

from sparse_tvm.errors import CompileError, ModelLoadError
from sparse_tvm.frontend.dynamic_quantization import matmul_integer_to_qdq
from sparse_tvm.frontend.fold import fold_constants
from sparse_tvm.frontend.fold_batchnorm import fold_batchnorm
from sparse_tvm.frontend.fold_dequantize import WeightScale, fold_quantized_weights
from sparse_tvm.frontend.fold_requantize import fold_requantize
from sparse_tvm.frontend.input_shapes import dynamic_dims, fix_input_shapes, graph_inputs
from sparse_tvm.frontend.load import load_onnx
from sparse_tvm.frontend.onnx_converters import our_converters
from sparse_tvm.frontend.qoperators import qoperators_to_qdq
from sparse_tvm.logs import native_quiet


@dataclass
class ImportedModel:
    """A Relax module plus the weights it expects.

    ``mod["main"]`` takes the real inputs first (``input_names`` order), then one parameter per
    floating-point ONNX initializer (the weights), whose ``Var.name`` is the initializer name;
    ``params`` holds their values. Integer initializers (shapes, axes, indices) are constants
    in the module. ``onnx_model`` is the folded ONNX model that was imported.
    ``input_dynamic_dims`` says, per input and axis, which dimensions the original model left
    dynamic (the name of the dimension, ``"?"`` when unnamed) and which it fixes (``None``).
    Bind them with ``relax.transform.BindParams("main", params)`` to get a closed module.
    ``weight_scales`` holds, for each weight a quantized (QDQ) model stored as symmetric int8,
    its scale (:class:`~sparse_tvm.frontend.fold_dequantize.WeightScale`): ``params`` has the
    dequantized float weight, the int8 kernels take the int8 values back from the two.
    """

    mod: tvm.IRModule
    params: dict[str, np.ndarray]
    input_names: list[str]
    input_shapes: list[tuple[int, ...]]
    input_dtypes: list[str]
    output_names: list[str]
    onnx_model: onnx.ModelProto | None = field(default=None, repr=False)
    input_dynamic_dims: list[tuple[str | None, ...]] = field(default_factory=list)
    weight_scales: dict[str, WeightScale] = field(default_factory=dict)


_FLOAT_TYPES = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}
# inputs the importer needs as constants even when they are floats
# (a Clip's bounds: constants, so that ReLU6 imports as maximum / minimum, see onnx_converters)
_STATIC_FLOAT_INPUTS = {"Resize": (1, 2, 3), "Upsample": (1,), "Clip": (1, 2)}


def _inline_static_initializers(model: onnx.ModelProto) -> None:
    """Turn every initializer that is not a weight into a ``Constant`` node, in place.

    With ``keep_params_in_input`` every initializer becomes a function parameter, and the
    importer cannot read shapes, axes or indices from a parameter (an ``Expand`` to a
    parameter shape imports with a symbolic shape that does not compile). Weights are the
    floating-point initializers; integer and boolean ones are shape data.
    """
    static_floats = {
        node.input[i]
        for node in model.graph.node
        for i in _STATIC_FLOAT_INPUTS.get(node.op_type, ())
        if i < len(node.input)
    }
    graph = model.graph
    inline = [
        t for t in graph.initializer if t.data_type not in _FLOAT_TYPES or t.name in static_floats
    ]
    if not inline:
        return
    names = {t.name for t in inline}
    constants = [
        onnx.helper.make_node("Constant", [], [t.name], name=f"{t.name}_constant", value=t)
        for t in inline
    ]
    weights = [t for t in graph.initializer if t.name not in names]
    inputs = [v for v in graph.input if v.name not in names]
    nodes = constants + list(graph.node)
    del graph.initializer[:], graph.input[:], graph.node[:]
    graph.initializer.extend(weights)
    graph.input.extend(inputs)
    graph.node.extend(nodes)


def _unsupported_ops(model: onnx.ModelProto) -> list[str]:
    # the importer only reports the first problem it meets; list them all up front
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    known = set(_get_convert_map()) | {"If", "Constant"}
    return sorted(
        {
            node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
            for node in model.graph.node
            if node.op_type not in known or node.domain not in ("", "ai.onnx")
        }
    )


def _convert(model: onnx.ModelProto) -> tvm.IRModule:
    unsupported = _unsupported_ops(model)
    if unsupported:
        raise ModelLoadError(
            f"TVM's ONNX importer does not support the operator(s) {', '.join(unsupported)}: "
            "re-export the model without them (e.g. another opset or a decomposed form)"
        )
    try:
        with warnings.catch_warnings():
            # the importer re-runs onnx.checker and warns about names; both are handled here
            warnings.simplefilter("ignore")
            with native_quiet(), our_converters():
                return from_onnx(model, keep_params_in_input=True, sanitize_input_names=False)
    except Exception as error:  # the importer raises anything from KeyError to TVMError
        ops = sorted({n.op_type for n in model.graph.node})
        reason = " ".join(str(error).split())[:300] or type(error).__name__
        raise ModelLoadError(
            f"TVM's ONNX importer failed ({type(error).__name__}: {reason}) on a graph with the "
            f"operators {', '.join(ops)}: simplify or re-export the model, or report it"
        ) from error


def _rename_params(func: relax.Function, names: list[str]) -> relax.Function:
    """Give the parameters after the inputs the exact initializer names.

    The importer drops a leading ``onnx::`` (PyTorch's prefix for anonymous weights).
    """
    num_input = len(func.params) - len(names)
    for var, name in zip(func.params[num_input:], names, strict=True):
        if var.name not in (name, name.removeprefix("onnx::")):
            raise CompileError(
                f"TVM's ONNX importer reordered the weights ('{var.name}' where '{name}' was "
                "expected): please report this with the model"
            )
    renames = {
        var: relax.Var(name, var.ty)
        for var, name in zip(func.params[num_input:], names, strict=True)
        if var.name != name
    }
    if not renames:
        return func
    body = func.bind_params(renames)
    new_params = [renames.get(var, var) for var in func.params]
    return relax.Function(new_params, body.body, func.ret_ty, func.is_pure, func.attrs)


def import_onnx(
    model: str | os.PathLike | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    *,
    fold_batchnorms: bool = True,
) -> ImportedModel:
    """Load, fix shapes, fold constants and import an ONNX model into Relax.

    Parameters
    ----------
    model
        A path to an ``.onnx`` file or an ``onnx.ModelProto``.
    input_shapes
        Static shapes for inputs, by name; required for every input with dynamic dimensions.
    fold_batchnorms
        Fold each BatchNormalization into the Conv / Gemm before it (inference: the layer gets
        the scaled weight and a bias). Training reads and writes the model's own initializers,
        so it imports them unfolded.

    Returns
    -------
    ImportedModel
        The module with unbound weight parameters, the weights, and the input/output
        descriptions. ``onnx_model`` is the folded ONNX model that was imported.

    Raises
    ------
    ModelLoadError, InputShapeError, SparseTVMError
    """
    proto = load_onnx(model)
    folded = fold_constants(fix_input_shapes(proto, input_shapes))  # always a new proto
    # quantized models: QLinearMatMul / QLinearConv and dynamically quantized MatMulInteger
    # layers as QDQ, int8 weights -> float layers (their scales kept for the int8 kernels)
    folded = qoperators_to_qdq(matmul_integer_to_qdq(folded))
    folded, weight_scales = fold_quantized_weights(folded)
    folded = fold_requantize(folded)  # transposes / reshapes / max pools between QDQ pairs
    if fold_batchnorms:  # Conv/Gemm + BatchNormalization -> one layer with a bias
        folded = fold_batchnorm(folded)
    _inline_static_initializers(folded)
    mod = _convert(folded)
    mod, detached = detach_params(mod)
    func = mod["main"]
    values = detached.get("main", [])
    initializer_names = [t.name for t in folded.graph.initializer]
    if len(values) != len(initializer_names):
        raise CompileError(
            f"TVM's ONNX importer returned {len(values)} weights for {len(initializer_names)} "
            "initializers: please report this with the model"
        )
    mod["main"] = _rename_params(func, initializer_names)
    params = {name: value.numpy() for name, value in zip(initializer_names, values, strict=True)}

    inputs = graph_inputs(folded)
    declared = {name: dims for name, dims, _ in graph_inputs(proto)}
    shapes = [tuple(int(d) for d in dims) for _, dims, _ in inputs]
    return ImportedModel(
        mod=mod,
        params=params,
        input_names=[name for name, _, _ in inputs],
        input_shapes=shapes,
        input_dtypes=[str(dtype) for _, _, dtype in inputs],
        output_names=[value.name for value in folded.graph.output],
        onnx_model=folded,
        input_dynamic_dims=[
            dynamic_dims(declared.get(name), len(shape))
            for (name, _, _), shape in zip(inputs, shapes, strict=True)
        ],
        weight_scales=weight_scales,
    )
