"""Small quantized (QDQ) models for the int8 path's tests: an FFN pruned in 16x4 blocks (the
int8 kernel's block), quantized by ``st.quantize``, with the onnxruntime run of the same QDQ
model as the reference."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import sparse_tvm as st
from sparse_tvm.runtime.onnxruntime_reference import reference_session


def ffn(m: int = 32, d: int = 64, h: int = 256, *, gemm: bool = False, seed: int = 0):
    """``relu(x @ W1 + b1) @ W2 + b2`` as MatMul + Add (or Gemm with transB, ``gemm``)."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((d, h)) / np.sqrt(d)).astype(np.float32)
    w2 = (rng.standard_normal((h, d)) / np.sqrt(h)).astype(np.float32)
    b1 = (rng.standard_normal(h) * 0.1).astype(np.float32)
    b2 = (rng.standard_normal(d) * 0.1).astype(np.float32)
    if gemm:
        nodes = [
            helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="up", transB=1),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("Gemm", ["h2", "w2", "b2"], ["y"], name="down", transB=1),
        ]
        w1, w2 = np.ascontiguousarray(w1.T), np.ascontiguousarray(w2.T)
    else:
        nodes = [
            helper.make_node("MatMul", ["x", "w1"], ["h0"], name="up"),
            helper.make_node("Add", ["h0", "b1"], ["h1"]),
            helper.make_node("Relu", ["h1"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w2"], ["y0"], name="down"),
            helper.make_node("Add", ["y0", "b2"], ["y"]),
        ]
    inits = [
        numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))
    ]
    graph = helper.make_graph(
        nodes,
        "ffn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, d])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def quantized_ffn(
    sparsity: float = 0.9, pattern: str = "16x4", *, per_channel: bool = True, m: int = 32, **kw
) -> onnx.ModelProto:
    """The FFN pruned to ``sparsity`` in ``pattern`` and quantized (uint8 activations)."""
    model = ffn(m, **kw)
    if sparsity:
        model = st.prune(model, sparsity, pattern).model
    d = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    data = {"x": np.random.default_rng(1).standard_normal((4 * m, d)).astype(np.float32)}
    return st.quantize(model, data, per_channel=per_channel)


def run_ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = reference_session(model)
    return session.run(None, {"x": x})[0]


def output_step(model: onnx.ModelProto) -> float:
    """The scale of the last QuantizeLinear: one rounding step of the model's output."""
    q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"][-1]
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return float(inits[q.input[1]])
