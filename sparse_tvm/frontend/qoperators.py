"""QOperator-format quantized layers as their QDQ form, which TVM's importer and
:mod:`.fold_dequantize` read.

onnxruntime's ``QuantFormat.QOperator`` (and older quantizing exporters) write a quantized layer
as one node: ``QLinearMatMul(a, a_scale, a_zero, b, b_scale, b_zero, y_scale, y_zero)`` or
``QLinearConv(x, x_scale, x_zero, w, w_scale, w_zero, y_scale, y_zero[, bias])``; TVM 0.27's
importer has neither. Each becomes ``DequantizeLinear`` of its quantized inputs, the float
MatMul / Conv (same attributes, same node name: reports keep it) and ``QuantizeLinear`` to its
output type, the meaning the ONNX specification gives them; an int32 ``QLinearConv`` bias
(scale ``x_scale * w_scale``, zero point 0) becomes a float initializer. A constant weight's
``DequantizeLinear`` is then folded by :mod:`.fold_dequantize`, so the layer is analysed like a
float one. A ``QLinearConv`` whose bias scale is not constant is left as it is (the importer
names it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from sparse_tvm.frontend.fold_batchnorm import _PLAIN_DOMAINS


def _dequantize(name: str, scale: str, zero: str, out: str, axis: int | None) -> onnx.NodeProto:
    inputs = [name, scale] + ([zero] if zero else [])
    attrs = {} if axis is None else {"axis": axis}
    return helper.make_node("DequantizeLinear", inputs, [out], **attrs)


def _per_channel(inits: dict[str, onnx.TensorProto], scale: str) -> bool:
    return scale in inits and len(inits[scale].dims) == 1 and inits[scale].dims[0] > 1


def _rewrite(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto], added: list):
    """The QDQ nodes for one QLinear node (None to leave it); new initializers go to
    ``added``."""
    stem = node.name or node.output[0]
    if node.op_type == "QLinearMatMul":
        a, a_s, a_z, b, b_s, b_z, y_s, y_z = node.input
        core = "MatMul"
        b_axis = 1 if _per_channel(inits, b_s) else None  # B is (k, n): a scale per column
        bias = None
    elif node.op_type == "QLinearConv":
        a, a_s, a_z, b, b_s, b_z, y_s, y_z = node.input[:8]
        core = "Conv"
        b_axis = 0 if _per_channel(inits, b_s) else None  # W is (m, c, kh, kw)
        bias = node.input[8] if len(node.input) > 8 and node.input[8] else None
        if bias is not None:
            if not all(name in inits for name in (bias, a_s, b_s)):
                return None
            scale = numpy_helper.to_array(inits[a_s]) * numpy_helper.to_array(inits[b_s])
            value = numpy_helper.to_array(inits[bias]).astype(np.float32) * scale
            bias_name = f"{stem}.bias_dequantized"
            added.append(numpy_helper.from_array(value.astype(np.float32), bias_name))
            bias = bias_name
    else:
        return None
    a_f, b_f, y_f = f"{stem}_a_dq", f"{stem}_b_dq", f"{stem}_y_float"
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    core_inputs = [a_f, b_f] + ([bias] if bias else [])
    return [
        _dequantize(a, a_s, a_z, a_f, None),
        _dequantize(b, b_s, b_z, b_f, b_axis),
        helper.make_node(core, core_inputs, [y_f], name=node.name, **attrs),
        helper.make_node("QuantizeLinear", [y_f, y_s, y_z], [node.output[0]]),
    ]


def qoperators_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with every ``QLinearMatMul`` / ``QLinearConv`` in its QDQ form
    (module doc); ``model`` is not modified, and is returned as is when it has none."""
    if not any(
        n.op_type in ("QLinearMatMul", "QLinearConv") and n.domain in _PLAIN_DOMAINS
        for n in model.graph.node
    ):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    added: list[onnx.TensorProto] = []
    nodes = []
    for node in graph.node:
        replaced = _rewrite(node, inits, added) if node.domain in _PLAIN_DOMAINS else None
        nodes.extend(replaced if replaced else [node])
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(added)
    return out
