"""Fold inference-form BatchNormalization into the Conv (or Gemm) that feeds it.

An unfolded PyTorch export writes ``Conv -> BatchNormalization``; TVM's importer turns the
second into ``relax.nn.batch_norm``, which stays a separate pass over the activations, and the
sparse-layer analysis sees a Conv without a bias. With the statistics constant,

    BN(y) = (y - mean) * scale / sqrt(var + eps) + B = y * f + (B - mean * f)

so the layer's weight is scaled per output channel by ``f`` and its bias becomes
``b * f + B - mean * f``. Zeros of the weight stay exactly zero (the sparsity is kept), the
weight keeps its initializer name and place, and the layer node keeps its name and metadata
(the report's layer names come from them). ``MatMul -> BatchNormalization`` is left alone: a
MatMul has no bias to take the shift.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

_PLAIN_DOMAINS = ("", "ai.onnx")
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}


@dataclass
class _Fold:
    """One layer + BatchNormalization pair to merge, with the new weight and bias values."""

    layer: onnx.NodeProto
    bn: onnx.NodeProto
    weight: np.ndarray
    bias: np.ndarray
    bias_name: str  # an existing bias initializer, or a new one added after the weight


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _input_uses(graph: onnx.GraphProto, uses: Counter | None = None) -> Counter:
    """How often each name is read by a node, subgraphs (If/Loop bodies) included."""
    uses = Counter() if uses is None else uses
    for node in graph.node:
        uses.update(name for name in node.input if name)
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                _input_uses(sub, uses)
    return uses


class _GraphIndex:
    """What the folding rules ask about a graph: initializers, producers, uses, outputs."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.inits = {t.name: t for t in graph.initializer if t.data_type in _FLOAT_TYPES}
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.uses = _input_uses(graph)
        self.outputs = {value.name for value in graph.output}
        self.names = {t.name for t in graph.initializer} | set(self.producer)
        self.names |= {value.name for value in graph.input}

    def private(self, name: str) -> bool:
        """A tensor read by exactly one node and not a graph output."""
        return self.uses[name] == 1 and name not in self.outputs

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a float initializer used only once, else None."""
        tensor = self.inits.get(name)
        return numpy_helper.to_array(tensor) if tensor is not None and self.private(name) else None

    def new_name(self, base: str) -> str:
        name, n = base, 0
        while name in self.names:
            n += 1
            name = f"{base}_{n}"
        self.names.add(name)
        return name


def _batchnorm_affine(
    bn: onnx.NodeProto, index: _GraphIndex
) -> tuple[np.ndarray, np.ndarray] | None:
    """``(f, shift)`` of an inference-form BatchNormalization (``BN(y) = y * f + shift``)."""
    attrs = _attrs(bn)
    if (
        bn.domain not in _PLAIN_DOMAINS
        or len(bn.input) != 5
        or any(bn.output[1:])  # training outputs (running statistics)
        or attrs.get("training_mode", 0)
        or not attrs.get("spatial", 1)  # opset < 9 per-activation statistics
    ):
        return None
    values = [index.inits.get(name) for name in bn.input[1:]]
    if any(v is None for v in values):
        return None
    scale, bias, mean, var = (numpy_helper.to_array(v).astype(np.float64) for v in values)
    eps = float(attrs.get("epsilon", 1e-5))
    if scale.ndim != 1 or not scale.shape == bias.shape == mean.shape == var.shape:
        return None
    if np.any(var + eps <= 0):
        return None
    f = scale / np.sqrt(var + eps)
    return f, bias - mean * f


def _scaled(weight: np.ndarray, f: np.ndarray, axis: int) -> np.ndarray:
    """``weight * f`` along ``axis``, in the weight's dtype, with its zeros kept exactly +0."""
    shape = [1] * weight.ndim
    shape[axis] = -1
    product = weight.astype(np.float64) * f.reshape(shape)
    return np.where(weight == 0, 0.0, product).astype(weight.dtype)


def _layer_weights(
    layer: onnx.NodeProto, index: _GraphIndex
) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """``(weight, bias or None, output-channel axis of the weight)`` of a foldable layer."""
    if layer.domain not in _PLAIN_DOMAINS or len(layer.input) < 2:
        return None
    weight = index.constant(layer.input[1])
    has_bias = len(layer.input) > 2 and layer.input[2]
    bias = index.constant(layer.input[2]) if has_bias else None
    if weight is None or (has_bias and bias is None):
        return None
    if layer.op_type == "Conv" and weight.ndim >= 3:
        return weight, bias, 0
    attrs = _attrs(layer)
    if layer.op_type == "Gemm" and weight.ndim == 2:
        axis = 0 if attrs.get("transB", 0) else 1
        if bias is None:
            return weight, None, axis
        n = weight.shape[axis]
        if bias.shape not in ((), (1,), (n,), (1, n)):  # a C per row would not be per channel
            return None
        beta = float(attrs.get("beta", 1.0))
        return weight, np.broadcast_to(bias.reshape(-1), (n,)) * beta, axis
    return None


def _plan(bn: onnx.NodeProto, index: _GraphIndex) -> _Fold | None:
    """The fold of ``bn`` into the Conv/Gemm before it, or None where the rules forbid it."""
    if bn.op_type != "BatchNormalization" or not bn.input or not index.private(bn.input[0]):
        return None
    layer = index.producer.get(bn.input[0])
    if layer is None or layer.op_type not in ("Conv", "Gemm") or len(layer.output) != 1:
        return None
    affine = _batchnorm_affine(bn, index)
    found = _layer_weights(layer, index)
    if affine is None or found is None:
        return None
    (f, shift), (weight, bias, axis) = affine, found
    if f.shape != (weight.shape[axis],):
        return None
    if len(layer.input) > 2 and layer.input[2]:
        bias_name = layer.input[2]
    else:
        stem = layer.input[1].removesuffix(".weight")
        bias_name = index.new_name(f"{stem}.bias" if stem != layer.input[1] else f"{stem}_bias")
        bias = np.zeros(weight.shape[axis])
    new_bias = (bias.astype(np.float64) * f + shift).astype(weight.dtype)
    return _Fold(layer, bn, _scaled(weight, f, axis), new_bias, bias_name)


def _rewrite_layer(fold: _Fold) -> None:
    """Give the layer the new bias and the BatchNormalization's output, in place."""
    layer = fold.layer
    inputs = list(layer.input[:2]) + [fold.bias_name] + list(layer.input[3:])
    del layer.input[:]
    layer.input.extend(inputs)
    layer.output[0] = fold.bn.output[0]
    if layer.op_type == "Gemm":  # beta is now inside the bias
        kept = [a for a in layer.attribute if a.name != "beta"]
        del layer.attribute[:]
        layer.attribute.extend(kept)


def _unused_after(folds: list[_Fold], index: _GraphIndex) -> set[str]:
    """The BatchNormalization parameters that no node reads once ``folds`` are done."""
    removed = Counter(name for fold in folds for name in fold.bn.input[1:])
    return {
        name
        for name, count in removed.items()
        if index.uses[name] == count and name not in index.outputs
    }


def _rebuild_initializers(graph: onnx.GraphProto, folds: list[_Fold], dropped: set[str]) -> None:
    """Replace folded weights and biases in place, add new biases after their weight and drop
    the ``dropped`` initializers (their graph inputs too, in old IR versions)."""
    existing = {t.name for t in graph.initializer}
    values: dict[str, np.ndarray] = {}
    added: dict[str, str] = {}  # weight -> the new bias that follows it
    for fold in folds:
        values[fold.layer.input[1]] = fold.weight
        values[fold.bias_name] = fold.bias
        if fold.bias_name not in existing:
            added[fold.layer.input[1]] = fold.bias_name
    kept = []
    for tensor in graph.initializer:
        if tensor.name in dropped:
            continue
        name = tensor.name
        kept.append(numpy_helper.from_array(values[name], name) if name in values else tensor)
        if name in added:
            kept.append(numpy_helper.from_array(values[added[name]], added[name]))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [value for value in graph.input if value.name not in dropped]
    del graph.input[:]
    graph.input.extend(inputs)


def fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Merge each inference-form BatchNormalization into the Conv or Gemm that feeds it.

    A pair is folded when the layer's weight (and bias, if any) are float initializers that
    nothing else reads, the layer's output is read only by the BatchNormalization and is not
    a graph output, and the BatchNormalization has one output, ``training_mode=0`` and
    initializer statistics. Other BatchNormalizations (after a MatMul, or with a shared
    input) are left as they are.

    Parameters
    ----------
    model
        An ONNX model; it is not modified.

    Returns
    -------
    onnx.ModelProto
        A new model in which each folded layer writes the BatchNormalization's output. Its
        weight keeps its name, place and dtype (zeros stay exactly zero); a layer without a
        bias gets one (``<weight stem>.bias``) right after its weight; the
        BatchNormalization's initializers and nodes are gone.
    """
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    index = _GraphIndex(graph)
    folds = [fold for node in graph.node if (fold := _plan(node, index)) is not None]
    if not folds:
        return folded
    dropped = _unused_after(folds, index)
    for fold in folds:
        _rewrite_layer(fold)
    _rebuild_initializers(graph, folds, dropped)
    gone = {fold.bn.output[0] for fold in folds}  # also the folded layers' outputs now
    nodes = [n for n in graph.node if n.op_type != "BatchNormalization" or n.output[0] not in gone]
    del graph.node[:]
    graph.node.extend(nodes)
    stale = {fold.bn.input[0] for fold in folds}
    value_info = [value for value in graph.value_info if value.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    return folded


__all__ = ["fold_batchnorm"]
