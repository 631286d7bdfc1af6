"""A QDQ model's constant DequantizeLinear(int8 weight) nodes become float weights at import:
values exactly (q - zero point) * scale, per tensor and per channel, zeros exactly zero, named
as the float model's weights; the analysis then sees the pruned layers of a quantized model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import sparse_tvm as st
from sparse_tvm.examples import mlp
from sparse_tvm.frontend.fold_dequantize import fold_quantized_weights


@pytest.fixture(scope="module")
def float_and_quantized():
    model = st.prune(mlp(batch=8, features=32, hidden=64, classes=10), 0.9, "1x1").model
    data = {"x": np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)}
    return model, {pc: st.quantize(model, data, per_channel=pc) for pc in (False, True)}


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


@pytest.mark.parametrize("per_channel", [False, True])
def test_weights_dequantized_exactly_and_named_as_before(float_and_quantized, per_channel):
    model, quantized = float_and_quantized
    q = quantized[per_channel]
    folded = fold_quantized_weights(q)[0]
    ints, floats, weights = _inits(q), _inits(folded), _inits(model)
    for name in ("fc1.weight", "fc2.weight", "fc3.weight"):
        w = floats[name]
        assert w.dtype == np.float32 and w.shape == weights[name].shape
        scale = ints[f"{name}_scale"]
        axis = 0 if name == "fc2.weight" else 1  # Gemm transB: output channels first
        if per_channel:
            scale = np.expand_dims(scale, 1 - axis)
        np.testing.assert_array_equal(w, ints[f"{name}_quantized"].astype(np.float32) * scale)
        np.testing.assert_array_equal(w == 0, weights[name] == 0)  # the pruned zeros, exactly
        assert np.abs(w - weights[name]).max() <= 0.51 * scale.max()
    # no int8 weight is left, nor its scale; activations keep their QuantizeLinear pairs
    assert not [t for t in folded.graph.initializer if t.data_type == TensorProto.INT8]
    assert not [n for n in folded.graph.node if set(n.input) & {"fc1.weight_quantized"}]
    ops = [n.op_type for n in folded.graph.node]
    assert ops.count("QuantizeLinear") == [n.op_type for n in q.graph.node].count("QuantizeLinear")
    onnx.checker.check_model(folded)
    assert "fc1.weight_quantized" in _inits(q)  # the input model is left as it was


def test_analysis_sees_the_pruned_layers_of_a_quantized_model(float_and_quantized):
    _, quantized = float_and_quantized
    report = st.inspect(quantized[True])
    assert [row.name for row in report.layers] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert all(row.sparsity >= 0.89 and row.format != "dense" for row in report.layers)


def test_shared_and_non_constant_dequantize_nodes():
    """Two DequantizeLinear nodes of one int8 initializer each get their float weight; one
    whose scale is computed at run time is left to the importer."""
    q = numpy_helper.from_array(np.array([[0, 2], [-3, 0]], np.int8), "w_quantized")
    s1 = numpy_helper.from_array(np.array(0.5, np.float32), "s1")
    s2 = numpy_helper.from_array(np.array(0.25, np.float32), "s2")
    nodes = [
        helper.make_node("DequantizeLinear", ["w_quantized", "s1"], ["w1"]),
        helper.make_node("DequantizeLinear", ["w_quantized", "s2"], ["w2"]),
        helper.make_node("Abs", ["s"], ["s_abs"]),
        helper.make_node("DequantizeLinear", ["w_quantized", "s_abs"], ["w3"]),
        helper.make_node("MatMul", ["x", "w1"], ["y1"]),
        helper.make_node("MatMul", ["x", "w2"], ["y2"]),
        helper.make_node("MatMul", ["x", "w3"], ["y3"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
        ],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, 2]) for i in (1, 2, 3)],
        [q, s1, s2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    folded = fold_quantized_weights(model)[0]
    onnx.checker.check_model(folded)
    inits = _inits(folded)
    matmul_weights = [n.input[1] for n in folded.graph.node if n.op_type == "MatMul"]
    np.testing.assert_array_equal(inits[matmul_weights[0]], [[0, 1], [-1.5, 0]])
    np.testing.assert_array_equal(inits[matmul_weights[1]], [[0, 0.5], [-0.75, 0]])
    assert matmul_weights[2] == "w3" and "w_quantized" in inits  # still read by the third
    assert [n.op_type for n in folded.graph.node].count("DequantizeLinear") == 1
