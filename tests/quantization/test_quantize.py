"""Static int8 quantization: QDQ around every constant-weight layer, pruned zeros exactly zero,
outputs near the float model's (onnxruntime runs both), the quantized model compiles and
matches onnxruntime on it, and bad data or options are one-line errors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import sparse_tvm as st
from sparse_tvm.examples import mlp, small_cnn
from sparse_tvm.frontend.initializers import prunable_weights
from sparse_tvm.quantization import quantized_weights
from sparse_tvm.runtime.onnxruntime_reference import reference_session


def run(model: onnx.ModelProto, feed: dict) -> np.ndarray:
    session = reference_session(model)
    return session.run(None, feed)[0]


@pytest.fixture(scope="module")
def pruned_mlp():
    model = mlp(batch=8, features=32, hidden=64, classes=10)
    return st.prune(model, 0.9, "1x1").model


def calibration(rng, n=64, features=32) -> dict:
    return {"x": rng.standard_normal((n, features)).astype(np.float32)}


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


@pytest.mark.parametrize("per_channel", [False, True])
def test_pruned_zeros_stay_zero_and_outputs_follow_the_float_model(pruned_mlp, per_channel):
    rng = np.random.default_rng(0)
    q = st.quantize(pruned_mlp, calibration(rng), per_channel=per_channel)
    ops = _ops(q)
    assert ops.count("DequantizeLinear") >= 6 and ops.count("QuantizeLinear") >= 3
    weights = quantized_weights(pruned_mlp, q)
    assert sorted(w.name for w in weights) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    for w in weights:
        assert w.zeros >= 0.89 * w.size and w.kept == w.zeros  # 90 % pruned, every zero kept
        assert w.per_channel == per_channel
        assert w.max_error <= 0.5 + 1e-3  # round to nearest: at most half a step of the scale
    ints = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    assert ints["fc2.weight_quantized"].dtype == np.int8
    x = rng.standard_normal((8, 32)).astype(np.float32)
    want, got = run(pruned_mlp, {"x": x}), run(q, {"x": x})
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
    assert not np.array_equal(got, want)  # it really is quantized


def test_excluded_layer_stays_float(pruned_mlp):
    q = st.quantize(pruned_mlp, calibration(np.random.default_rng(1)), exclude=["fc3"])
    assert sorted(w.name for w in quantized_weights(pruned_mlp, q)) == ["fc1.weight", "fc2.weight"]
    floats = {t.name for t in q.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    assert "fc3.weight" in floats


def test_int8_activations_are_symmetric(pruned_mlp):
    q = st.quantize(pruned_mlp, calibration(np.random.default_rng(2)), activations="int8")
    zero_points = [
        numpy_helper.to_array(t)
        for t in q.graph.initializer
        if t.name.endswith("_zero_point") and "weight" not in t.name and "bias" not in t.name
    ]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)


def test_conv_model_with_unnamed_nodes_and_its_compiled_build(tmp_path):
    """A CNN whose nodes have no names (the quantizer selects by name) quantizes per channel;
    the quantized model compiles and runs as onnxruntime runs it."""
    model = st.prune(small_cnn(batch=1, size=16), 0.8, "1x1").model
    for node in model.graph.node:
        node.name = ""
    rng = np.random.default_rng(3)
    data = {"image": rng.standard_normal((4, 3, 16, 16)).astype(np.float32)}
    q = st.quantize(model, data, per_channel=True)
    weights = quantized_weights(model, q)
    assert len(weights) == len(prunable_weights(model)) and all(w.kept == w.zeros for w in weights)
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    compiled = st.compile(q, "x86", measure=False)
    np.testing.assert_allclose(compiled.run({"image": x})[0], run(q, {"image": x}), atol=2e-2)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"y": np.zeros((8, 32), np.float32)}, "lacks the model's input 'x'"),
        ({"x": np.zeros((8, 31), np.float32)}, "samples of shape (31,)"),
        ({"x": np.zeros((4, 32), np.float32)}, "fewer than the model's batch of 8"),
        ({"x": np.full((8, 32), np.nan, np.float32)}, "NaN"),
        ("missing.npz", "does not exist"),
    ],
)
def test_bad_calibration_data_is_one_line(pruned_mlp, data, message):
    with pytest.raises(
        st.TrainingError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as e:
        st.quantize(pruned_mlp, data)
    assert "\n" not in str(e.value)


def test_bad_options_are_one_line(pruned_mlp):
    data = calibration(np.random.default_rng(4))
    with pytest.raises(st.UsageError, match="activations must be one of"):
        st.quantize(pruned_mlp, data, activations="int4")
    with pytest.raises(st.UsageError, match="no prunable weight or node"):
        st.quantize(pruned_mlp, data, exclude=["fc9"])
    with pytest.raises(st.UsageError, match="no layer left to quantize"):
        st.quantize(pruned_mlp, data, exclude=["fc1", "fc2", "fc3"])


def test_quantized_pruned_model_compiles_sparse_and_matches_onnxruntime(pruned_mlp):
    """prune -> quantize -> compile: the int8 weights are seen with their zeros (the layers go
    sparse where that measures faster, as in the float model) and the outputs are onnxruntime's
    on the QDQ model but for values a rounding step of the output grid apart."""
    rng = np.random.default_rng(5)
    q = st.quantize(pruned_mlp, calibration(rng))
    compiled = st.compile(q, "x86")
    assert [row.sparsity >= 0.89 for row in compiled.report.layers] == [True] * 3
    x = rng.standard_normal((8, 32)).astype(np.float32)
    got, want = compiled.run({"x": x})[0], run(q, {"x": x})
    producer = {n.output[0]: n for n in q.graph.node}
    last = producer[q.graph.output[0].name]
    while last.op_type == "Identity":
        last = producer[last.input[0]]
    assert last.op_type == "DequantizeLinear"  # the output on the int8 grid of this scale
    step = numpy_helper.to_array(next(t for t in q.graph.initializer if t.name == last.input[1]))
    assert np.abs(got - want).max() <= 1.01 * step
    assert np.mean(got == want) >= 0.95
