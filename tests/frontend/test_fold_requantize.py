"""Data movement between a QDQ pair with the same scale and zero point runs on the 8-bit
values: the folded model computes onnxruntime's outputs of the original exactly."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sparse_tvm.frontend.fold_requantize import fold_requantize
from sparse_tvm.runtime.onnxruntime_reference import reference_session


def _model(middle: list, out_scale=0.05, out_zero=128, shape=(1, 2, 6, 6), out_shape=None):
    """x -> Q -> DQ -> middle ops (reading "d", writing "p") -> Q(out) -> DQ -> y."""
    inits = [
        numpy_helper.from_array(np.array(0.05, np.float32), "s"),
        numpy_helper.from_array(np.array(out_scale, np.float32), "s2"),
        numpy_helper.from_array(np.array(128, np.uint8), "z"),
        numpy_helper.from_array(np.array(out_zero, np.uint8), "z2"),
        numpy_helper.from_array(np.array([1, -1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
        *middle,
        helper.make_node("QuantizeLinear", ["p", "s2", "z2"], ["q2"]),
        helper.make_node("DequantizeLinear", ["q2", "s2", "z2"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, x):
    return reference_session(model).run(None, {"x": x})[0]


CASES = {
    "maxpool": [helper.make_node("MaxPool", ["d"], ["p"], kernel_shape=[2, 2], strides=[2, 2])],
    "transpose": [helper.make_node("Transpose", ["d"], ["p"], perm=[0, 2, 3, 1])],
    "reshape": [helper.make_node("Reshape", ["d", "flat"], ["p"])],
    "none": [helper.make_node("Identity", ["d"], ["p"])],  # Identity is no mover: kept
}


def test_movers_between_equal_pairs_run_on_bytes_exactly():
    x = (np.arange(72, dtype=np.float32).reshape(1, 2, 6, 6) - 36) * 0.0625
    for name, middle in CASES.items():
        model = _model(middle)
        folded = fold_requantize(model)
        ops = [n.op_type for n in folded.graph.node]
        if name == "none":
            assert folded is model
            continue
        assert ops == ["QuantizeLinear", middle[0].op_type, "DequantizeLinear"], (name, ops)
        np.testing.assert_array_equal(_run(folded, x), _run(model, x))
    assert [n.op_type for n in model.graph.node].count("QuantizeLinear") == 2  # not mutated


def test_other_scale_or_zero_point_or_a_second_reader_keeps_the_pair():
    pool = CASES["maxpool"]
    for model in (_model(pool, out_scale=0.07), _model(pool, out_zero=120)):
        assert fold_requantize(model) is model
    model = _model(pool)
    model.graph.output.append(helper.make_tensor_value_info("d", TensorProto.FLOAT, None))
    assert fold_requantize(model) is model  # the dequantized tensor is read elsewhere too


def test_a_bare_requantize_is_the_8bit_tensor():
    model = _model([], out_shape=[1, 2, 6, 6])
    model.graph.node[2].input[0] = "d"  # x -> Q -> DQ -> Q -> DQ -> y: the middle pair goes
    folded = fold_requantize(model)
    assert [n.op_type for n in folded.graph.node] == ["QuantizeLinear", "DequantizeLinear"]
    assert folded.graph.node[1].input[0] == "q"
    x = np.linspace(-7, 7, 72, dtype=np.float32).reshape(1, 2, 6, 6)
    np.testing.assert_array_equal(_run(folded, x), _run(model, x))
    onnx.checker.check_model(folded)
