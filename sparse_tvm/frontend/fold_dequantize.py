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

The int8 values stay recoverable: :func:`fold_quantized_weights` also returns, per folded
symmetric int8 weight, its scale and axis (:class:`WeightScale`), from which the int8 kernels
take the exact int8 values back (``round(w / scale)``: the float weight is ``q * scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class WeightScale:
    """How a folded weight was quantized: symmetric int8 (zero point 0), ``scale`` a scalar or
    one per index of ``axis`` of the weight as the model stores it."""

    scale: np.ndarray  # float32, 0-d or 1-d
    axis: int


def _value(
    node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]
) -> tuple[np.ndarray, WeightScale | None] | None:
    """The float value of a constant ``DequantizeLinear`` and, for a symmetric int8 one, its
    scale; None where it is not one we fold."""
    if node.op_type != "DequantizeLinear" or node.domain not in _PLAIN_DOMAINS:
        return None
    names = [name for name in node.input if name]
    if not names or any(name not in inits for name in names) or _attr(node, "block_size", 0):
        return None
    q = numpy_helper.to_array(inits[names[0]])
    scale = numpy_helper.to_array(inits[names[1]])
    zero = numpy_helper.to_array(inits[names[2]]) if len(names) > 2 else np.zeros((), q.dtype)
    axis = _attr(node, "axis", 1)
    value = dequantize(q, scale, zero, axis)
    symmetric = q.dtype == np.int8 and not zero.any() and scale.dtype == np.float32
    per_axis = scale.ndim == 0 or (scale.ndim == 1 and q.ndim > 0)
    weight_scale = None
    if symmetric and per_axis and q.ndim > 0:
        weight_scale = WeightScale(scale.astype(np.float32), axis % q.ndim)
    return value, weight_scale


def fold_quantized_weights(
    model: onnx.ModelProto,
) -> tuple[onnx.ModelProto, dict[str, WeightScale]]:
    """A copy of ``model`` in which every all-constant ``DequantizeLinear`` is the float
    initializer it computes (module doc), and the scale of each folded symmetric int8 weight by
    its float initializer's name; ``model`` is not modified."""
    scales: dict[str, WeightScale] = {}
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
        found = _value(node, inits)
        if found is None:
            kept_nodes.append(node)
            continue
        value, weight_scale = found
        name = node.input[0].removesuffix(_QUANTIZED_SUFFIX)
        if name == node.input[0] or name in taken:
            name = node.output[0]
        taken.add(name)
        if weight_scale is not None:
            scales[name] = weight_scale
        replaced.setdefault(node.input[0], []).append(numpy_helper.from_array(value, name))
        renamed[node.output[0]] = name
    if not replaced:
        return folded, scales
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
    return folded, scales
