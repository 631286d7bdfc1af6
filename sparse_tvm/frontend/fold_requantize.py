"""Data movement between a QDQ model's quantize / dequantize pairs, on the 8-bit values.

onnxruntime's quantizer (and PyTorch's QDQ exports) wrap the ops that only move data, a
Transpose, Reshape or MaxPool after an attention or conv, in their own pair with the same
scale and zero point as their input::

    q --DequantizeLinear(s, z)--> Transpose --QuantizeLinear(s, z)--> q2

Imported as is, that is three passes over float32 (in MiniLM's int8 build: 23 us a layer,
as long as a layer norm); with the pair gone it is one pass over bytes, ``Transpose(q)``.
Exact: a data-moving op takes its output elements from its input, and quantizing the
dequantized ``q`` by the same scale and zero point gives ``q`` back (the float error of
``(q - z) * s / s`` is far below half a step); a max of dequantized values is the dequantized
max (dequantization is increasing), and MaxPool's padding never wins a window that holds an
input. A bare ``QuantizeLinear(DequantizeLinear(q, s, z), s, z)`` is ``q``.

Per-tensor parameters only (one scale, one zero point, both initializers, equal in value),
each intermediate read by the next op alone; onnxruntime does the same rewrite on such pairs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from sparse_tvm.frontend.fold_batchnorm import _PLAIN_DOMAINS, _input_uses

__all__ = ["fold_requantize"]

# ops that only move (or select, for MaxPool) elements: the same on 8-bit values
_MOVERS = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "MaxPool"}


def _params(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple | None:
    """``(scale, zero point, dtype)`` of a per-tensor Q / DQ with initializer parameters."""
    if node.domain not in _PLAIN_DOMAINS or len(node.input) < 3 or not node.input[2]:
        return None
    scale, zero = (inits.get(name) for name in node.input[1:3])
    if scale is None or zero is None:
        return None
    s, z = numpy_helper.to_array(scale), numpy_helper.to_array(zero)
    if s.size != 1 or z.size != 1 or z.dtype not in (np.uint8, np.int8):
        return None
    return float(s.reshape(())), int(z.reshape(())), str(z.dtype)


def _pairs(graph: onnx.GraphProto) -> list[tuple[int, int | None, int]]:
    """``(dequantize, mover or None, quantize)`` node indices of the pairs to remove."""
    inits = {t.name: t for t in graph.initializer}
    index = {out: i for i, node in enumerate(graph.node) for out in node.output if out}
    uses = _input_uses(graph)
    uses.update(o.name for o in graph.output)  # a graph output is read by the caller
    found, taken = [], set()
    for q, node in enumerate(graph.node):
        if node.op_type != "QuantizeLinear" or (params := _params(node, inits)) is None:
            continue
        m = index.get(node.input[0])
        mover = None if m is None else graph.node[m]
        if mover is not None and mover.op_type in _MOVERS and mover.domain in _PLAIN_DOMAINS:
            d = index.get(mover.input[0])
            single = uses[mover.output[0]] == 1 and len([o for o in mover.output if o]) == 1
        else:
            d, m, single = m, None, True
        dequantize = None if d is None else graph.node[d]
        if (
            dequantize is None
            or dequantize.op_type != "DequantizeLinear"
            or _params(dequantize, inits) != params
            or uses[dequantize.output[0]] != 1
            or not single
            or d in taken
        ):
            continue
        taken.add(d)
        found.append((d, m, q))
    return found


def fold_requantize(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the pairs of the module doc removed (a new proto where any is)."""
    pairs = _pairs(model.graph)
    if not pairs:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = out.graph.node
    outputs = {o.name for o in out.graph.output}
    drop: set[int] = set()
    renames: dict[str, str] = {}  # a removed quantize's output -> the tensor now holding it
    for d, m, q in pairs:
        dequantize, quantize = nodes[d], nodes[q]
        drop.update({d, q})
        if m is not None:  # the mover reads the 8-bit input and writes the quantize's name
            nodes[m].input[0] = dequantize.input[0]
            nodes[m].output[0] = quantize.output[0]
        elif quantize.output[0] in outputs:  # keep the graph output's name: an identity
            drop.discard(q)
            quantize.op_type = "Identity"
            quantize.input[:] = [dequantize.input[0]]
            del quantize.attribute[:]
        else:
            renames[quantize.output[0]] = dequantize.input[0]
    kept = [node for i, node in enumerate(nodes) if i not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            while name in renames:
                name = renames[name]
            node.input[i] = name
    del out.graph.node[:]
    out.graph.node.extend(kept)
    return out
