"""ONNX initializer access: the prunable weights of a graph, their (n, k) view, and reading and
writing initializers by name.

Pruning (which weights, which masks), quantization (which layers) and training (writing
trained weights back) use these, so they live here, below them.

MatMul ``B`` (k, n) is viewed transposed; Gemm ``B`` as stored when ``transB=1``; Conv
``W`` (out, in, kh, kw) as (out, in*kh*kw). Patterns are defined on that (n, k) view, the same
orientation the kernels use: "16x1" = 16 output features x 1 input feature.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from sparse_tvm.errors import UsageError


@dataclass(frozen=True)
class PrunableWeight:
    """A constant weight of a MatMul, Gemm or Conv node and how it maps to the (n, k) view."""

    name: str  # initializer name
    node: str  # node name
    op: str  # MatMul, Gemm or Conv
    transposed: bool  # stored as (k, n): the (n, k) view is the transpose

    def to_nk(self, array: np.ndarray) -> np.ndarray:
        """The stored array -> its (n, k) view."""
        if self.op == "Conv":
            return array.reshape(array.shape[0], -1)
        return array.T if self.transposed else array

    def from_nk(self, nk: np.ndarray, like: np.ndarray) -> np.ndarray:
        """An (n, k) array -> the stored layout of ``like``."""
        if self.op == "Conv":
            return nk.reshape(like.shape)
        return np.ascontiguousarray(nk.T if self.transposed else nk)


def prunable_weights(model: onnx.ModelProto) -> list[PrunableWeight]:
    """The constant weights of MatMul, Gemm and Conv nodes, in graph order."""
    initializers = {t.name for t in model.graph.initializer}
    found, seen = [], set()
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm", "Conv") or len(node.input) < 2:
            continue
        name = node.input[1]
        if name not in initializers or name in seen:
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Gemm" and attrs.get("transA", 0):
            continue
        transposed = node.op_type == "MatMul" or (
            node.op_type == "Gemm" and not attrs.get("transB", 0)
        )
        seen.add(name)
        found.append(PrunableWeight(name, node.name, node.op_type, transposed))
    return found


def select_weights(
    model: onnx.ModelProto, exclude: Iterable[str]
) -> tuple[list[PrunableWeight], list[str]]:
    """The prunable weights not named in ``exclude`` (by weight or node name), and the names of
    the excluded weights; :class:`UsageError` for a name that is neither."""
    excluded = set(exclude)
    weights = prunable_weights(model)
    known = {w.name for w in weights} | {w.node for w in weights}
    unknown = sorted(excluded - known)
    if unknown:
        raise UsageError(
            f"exclude names {', '.join(unknown)}, which is no prunable weight or node; "
            f"the prunable weights are {', '.join(w.name for w in weights)}"
        )
    chosen = [w for w in weights if w.name not in excluded and w.node not in excluded]
    return chosen, [w.name for w in weights if w not in chosen]


def read_initializer(model: onnx.ModelProto, name: str) -> np.ndarray:
    """The value of initializer ``name``; ``KeyError`` when there is none."""
    for tensor in model.graph.initializer:
        if tensor.name == name:
            return numpy_helper.to_array(tensor)
    raise KeyError(name)


def write_initializer(model: onnx.ModelProto, name: str, value: np.ndarray) -> None:
    """Replace initializer ``name`` of ``model`` (in place) by ``value``."""
    for i, tensor in enumerate(model.graph.initializer):
        if tensor.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return
    raise KeyError(name)


__all__ = ["PrunableWeight", "prunable_weights", "read_initializer", "write_initializer"]
