"""QOperator quantized models (QLinearConv / QLinearMatMul, as onnxruntime's QOperator format
writes them) import as their QDQ form: the layers are found with their zeros and compile to
onnxruntime's results on the same model, within a step of the output grid."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

import sparse_tvm as st
from sparse_tvm.examples import small_cnn
from sparse_tvm.frontend.qoperators import qoperators_to_qdq
from sparse_tvm.quantization.calibration import CalibrationReader, calibration_data
from sparse_tvm.runtime.onnxruntime_reference import reference_session


def _run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    session = reference_session(model)
    return session.run(None, feed)[0]


@pytest.mark.parametrize("per_channel", [False, True])
def test_qlinear_conv_model_compiles_sparse_and_matches_onnxruntime(tmp_path, per_channel):
    model = st.prune(small_cnn(batch=1, size=16), 0.8, "1x1").model
    rng = np.random.default_rng(3)
    data = {"image": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    onnx.save(model, tmp_path / "f.onnx")
    quantize_static(
        str(tmp_path / "f.onnx"),
        str(tmp_path / "q.onnx"),
        CalibrationReader(calibration_data(model, data), 1),
        quant_format=QuantFormat.QOperator,
        op_types_to_quantize=["Conv"],
        per_channel=per_channel,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
    )
    q = onnx.load(tmp_path / "q.onnx")
    assert [n.op_type for n in q.graph.node].count("QLinearConv") == 5
    report = st.inspect(q)
    convs = [row for row in report.layers if row.op.startswith("conv2d")]
    assert len(convs) == 5 and all(row.sparsity >= 0.75 for row in convs)
    compiled = st.compile(q, "x86", measure=False)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    got, want = compiled.run({"image": x})[0], _run(q, {"image": x})
    # the classifier (float Gemm) after the last quantized conv: a step there moves the logits
    # by at most that step times the classifier's weights
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
    assert np.mean(np.isclose(got, want, rtol=1e-4, atol=1e-5)) >= 0.95


def test_qlinear_matmul_is_dequantize_matmul_quantize():
    """One QLinearMatMul with a per-column int8 B: the rewrite's nodes, run by onnxruntime,
    give the QLinearMatMul's own result."""
    rng = np.random.default_rng(0)
    b = rng.integers(-127, 128, (8, 4)).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "a_s"),
        numpy_helper.from_array(np.array(128, np.uint8), "a_z"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array([0.01, 0.02, 0.03, 0.04], np.float32), "b_s"),
        numpy_helper.from_array(np.zeros(4, np.int8), "b_z"),
        numpy_helper.from_array(np.array(0.2, np.float32), "y_s"),
        numpy_helper.from_array(np.array(100, np.uint8), "y_z"),
    ]
    node = helper.make_node(
        "QLinearMatMul", ["a", "a_s", "a_z", "b", "b_s", "b_z", "y_s", "y_z"], ["y"], name="mm"
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [3, 8])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [3, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    rewritten = qoperators_to_qdq(model)
    onnx.checker.check_model(rewritten)
    assert [n.op_type for n in rewritten.graph.node] == [
        "DequantizeLinear", "DequantizeLinear", "MatMul", "QuantizeLinear"
    ]  # fmt: skip
    assert [n.name for n in rewritten.graph.node if n.op_type == "MatMul"] == ["mm"]
    a = rng.integers(0, 256, (3, 8)).astype(np.uint8)
    got, want = _run(rewritten, {"a": a}), _run(model, {"a": a})
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert qoperators_to_qdq(rewritten) is rewritten  # nothing left to rewrite
