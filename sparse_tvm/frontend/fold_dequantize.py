"""Dequantize the constant weights of a quantized (QDQ) model at import.

A QDQ model (``sparse-tvm quantize``, onnxruntime's ``quantize_static``, PyTorch's quantized
exports) stores each layer's weight as an int8 initializer read through
``DequantizeLinear(q, scale, zero_point)``; TVM's importer keeps that as a dequantize op in
front of the matmul, so the layer has no constant float weight and the sparse-layer analysis
does not see it. Here each ``DequantizeLinear`` whose inputs are all initializers becomes the
float initializer it computes, ``(q - zero_point) * scale`` (per tensor or per channel along
``axis``): a zero int8 weight is exactly 0.0, so a pruned weight keeps its zeros and its
sparsity structure, and the layer compiles as a float layer of the same values (sparse where
that is faster). The activations' ``QuantizeLinear`` / ``DequantizeLinear`` pairs stay: the
values between layers are rounded to the int8 grid as onnxruntime rounds them.

The float weight takes the int8 initializer's place and, where free, its name without
onnxruntime's ``_quantized`` suffix (``fc1.weight``), so reports name it as the float model
did. Blocked quantization (``block_size``) is left to the importer.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from sparse_tvm.frontend.fold_batchnorm import _PLAIN_DOMAINS, _input_uses

_QUANTIZED_SUFFIX = "_quantized"


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray, axis: int) -> np.ndarray:
    """``(q - zero) * scale`` as DequantizeLinear computes it: per tensor, or per channel along
    ``axis`` where ``scale`` is 1-d; in ``scale``'s float type."""
    if scale.ndim == 1 and q.ndim > 0:
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale, zero = scale.reshape(shape), zero.reshape(shape)
    return ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(scale.dtype)


def _value(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> np.ndarray | None:
    """The float value of a constant ``DequantizeLinear``, None where it is not one we fold."""
    if node.op_type != "DequantizeLinear" or node.domain not in _PLAIN_DOMAINS:
        return None
    names = [name for name in node.input if name]
    if not names or any(name not in inits for name in names) or _attr(node, "block_size", 0):
        return None
    q = numpy_helper.to_array(inits[names[0]])
    scale = numpy_helper.to_array(inits[names[1]])
    zero = numpy_helper.to_array(inits[names[2]]) if len(names) > 2 else np.zeros((), q.dtype)
    return dequantize(q, scale, zero, _attr(node, "axis", 1))


def fold_dequantized_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in which every all-constant ``DequantizeLinear`` is the float
    initializer it computes (module doc); ``model`` is not modified."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    inits = {t.name: t for t in graph.initializer}
    taken = set(inits) | {v.name for v in graph.input} | {v.name for v in graph.output}
    taken |= {out for node in graph.node for out in node.output}
    replaced: dict[str, list[onnx.TensorProto]] = {}  # int8 initializer -> its float forms
    renamed: dict[str, str] = {}  # DequantizeLinear output -> the float initializer's name
    kept_nodes = []
    for node in graph.node:
        value = _value(node, inits)
        if value is None:
            kept_nodes.append(node)
            continue
        name = node.input[0].removesuffix(_QUANTIZED_SUFFIX)
        if name == node.input[0] or name in taken:
            name = node.output[0]
        taken.add(name)
        replaced.setdefault(node.input[0], []).append(numpy_helper.from_array(value, name))
        renamed[node.output[0]] = name
    if not replaced:
        return folded
    del graph.node[:]
    graph.node.extend(kept_nodes)
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    for output in graph.output:  # a dequantized weight as a graph output: rare, kept working
        if output.name in renamed:
            graph.node.append(
                onnx.helper.make_node("Identity", [renamed[output.name]], [output.name])
            )
    used = set(_input_uses(graph)) | {v.name for v in graph.output}
    kept = []
    for tensor in graph.initializer:
        if tensor.name in used:  # read by something else than its DequantizeLinear too
            kept.append(tensor)
        kept.extend(replaced.get(tensor.name, []))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [v for v in graph.input if v.name not in inits or v.name in used]
    del graph.input[:]
    graph.input.extend(inputs)
    return folded
