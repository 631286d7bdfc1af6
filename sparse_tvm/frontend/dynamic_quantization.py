"""Dynamically quantized models (onnxruntime's ``quantize_dynamic``) in their QDQ form.

``quantize_dynamic`` writes each linear layer as

    DynamicQuantizeLinear(x) -> (xq, x_scale, x_zero)
    MatMulInteger(xq, Wq, x_zero, w_zero) -> Cast(float) -> Mul(x_scale * w_scale)

with ``Wq`` an int8 initializer. TVM imports that as an int32 matmul of a constant: no layer has
a float weight, so none is seen as sparse and every one runs TVM's dense int32 matmul. Here
each such chain becomes what it computes,

    DequantizeLinear(xq, x_scale, x_zero) -> MatMul(., DequantizeLinear(Wq, w_scale, w_zero))

(the same sums, scaled once: ``(xq - x_zero) * x_scale @ (Wq - w_zero) * w_scale``), so the
weight's ``DequantizeLinear`` folds to the float weight (:mod:`.fold_dequantize`, its scale
kept) and the layer is analysed, and compiled sparse, as a QDQ model's is. Matched only
where every intermediate is read by the chain alone and the weight side is constant (scale a
scalar or one per output column, zero point 0 where given).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from sparse_tvm.frontend.fold_batchnorm import _PLAIN_DOMAINS, _input_uses

__all__ = ["matmul_integer_to_qdq"]


def _only_user(graph: onnx.GraphProto, uses, name: str, outputs: set[str]):
    """The one node reading ``name`` (subgraphs counted), if exactly one does, once, and it
    is not a graph output."""
    if uses.get(name, 0) != 1 or name in outputs:
        return None
    return next((node for node in graph.node if name in node.input), None)


def _weight_side(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]
) -> tuple[np.ndarray, str | None] | None:
    """``(Wq, w_zero name)`` of a MatMulInteger with a constant 2-d int8 weight and zero
    weight zero point, else None."""
    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    wq = numpy_helper.to_array(inits[node.input[1]])
    if wq.dtype != np.int8 or wq.ndim != 2:
        return None
    w_zero = node.input[3] if len(node.input) > 3 and node.input[3] else None
    if w_zero is not None and (w_zero not in inits or numpy_helper.to_array(inits[w_zero]).any()):
        return None
    return wq, w_zero


def _scale_product(
    node: onnx.NodeProto, x_scale: str, inits: dict[str, onnx.TensorProto], n: int
) -> str | None:
    """The weight scale initializer of ``Mul(x_scale, w_scale)`` (either order), else None."""
    if node.op_type != "Mul" or node.domain not in _PLAIN_DOMAINS or len(node.input) != 2:
        return None
    a, b = node.input
    other = b if a == x_scale else a if b == x_scale else None
    if other is None or other not in inits:
        return None
    scale = numpy_helper.to_array(inits[other])
    if scale.size != 1 and scale.shape != (n,):
        return None
    return other


def matmul_integer_to_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` with each dynamically quantized linear layer in QDQ form (module
    doc); ``model`` is not modified."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {name: node for node in graph.node for name in node.output}
    uses = _input_uses(graph)
    outputs = {v.name for v in graph.output}
    replaced: dict[int, list[onnx.NodeProto]] = {}  # id of the Mul node -> its replacement
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "MatMulInteger" or node.domain not in _PLAIN_DOMAINS:
            continue
        weight = _weight_side(node, inits)
        quantizer = producer.get(node.input[0])
        if weight is None or quantizer is None or quantizer.op_type != "DynamicQuantizeLinear":
            continue
        xq, x_scale, x_zero = quantizer.output
        if len(node.input) < 3 or node.input[2] != x_zero:
            continue
        cast = _only_user(graph, uses, node.output[0], outputs)
        if cast is None or cast.op_type != "Cast":
            continue
        if next((a.i for a in cast.attribute if a.name == "to"), 0) != onnx.TensorProto.FLOAT:
            continue
        mul = _only_user(graph, uses, cast.output[0], outputs)
        if mul is None or mul.op_type != "Mul" or len(mul.input) != 2:
            continue
        product_name = mul.input[1] if mul.input[0] == cast.output[0] else mul.input[0]
        product = producer.get(product_name)
        wq, w_zero = weight
        w_scale = product and _scale_product(product, x_scale, inits, wq.shape[1])
        if not w_scale:
            continue
        stem = node.output[0]
        per_column = numpy_helper.to_array(inits[w_scale]).size != 1
        w_inputs = [node.input[1], w_scale] + ([w_zero] if w_zero else [])
        replaced[id(mul)] = [
            helper.make_node(
                "DequantizeLinear", [xq, x_scale, x_zero], [f"{stem}_x_dq"], name=f"{stem}_x_dq"
            ),
            helper.make_node(
                "DequantizeLinear", w_inputs, [f"{stem}_w_dq"], name=f"{stem}_w_dq",
                axis=1 if per_column else 0,
            ),
            helper.make_node(
                "MatMul", [f"{stem}_x_dq", f"{stem}_w_dq"], [mul.output[0]],
                name=node.name or stem,
            ),
        ]  # fmt: skip
        dropped |= {id(node), id(cast)}
        if uses.get(product_name, 0) == 1 and product_name not in outputs:
            dropped.add(id(product))
    if not replaced:
        return out
    nodes = []
    for node in graph.node:
        if id(node) in dropped:
            continue
        nodes.extend(replaced.get(id(node), [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    return out
