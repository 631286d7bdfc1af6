"""Our Clip converter: constant bounds import as maximum / minimum (no call_tir, so layout
passes see through ReLU6), every form of Clip still equals onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sparse_tvm.frontend import import_onnx
from sparse_tvm.transform.channels_last import to_channels_last
from tests.frontend.helpers import run_onnxruntime, run_tvm


def _conv_clip_model(bounds: str, opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")]
    clip_inputs = ["c"]
    attrs = {}
    if opset < 11:
        attrs = {"min": 0.0, "max": 6.0}
    elif bounds == "relu6":
        inits += [
            numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in [("lo", 0.0), ("hi", 6.0)]
        ]
        clip_inputs += ["lo", "hi"]
    elif bounds == "high only":
        inits.append(numpy_helper.from_array(np.array(1.5, np.float32), "hi"))
        clip_inputs += ["", "hi"]
    elif bounds == "nan low":
        inits += [
            numpy_helper.from_array(np.array(v, np.float32), n)
            for n, v in [("lo", np.nan), ("hi", 2.0)]
        ]
        clip_inputs += ["lo", "hi"]
    elif bounds == "tensor bound":  # a bound computed from the input: TVM's own converter
        clip_inputs += ["lo"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    if bounds == "tensor bound":
        nodes.append(helper.make_node("ReduceMin", ["x"], ["lo"], keepdims=0))
    nodes.append(helper.make_node("Clip", clip_inputs, ["y"], **attrs))
    graph = helper.make_graph(
        nodes,
        "clip",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 8, 8])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    ("bounds", "opset"),
    [("relu6", 17), ("relu6", 9), ("high only", 17), ("nan low", 17), ("tensor bound", 17)],
)
def test_clip_matches_onnxruntime(bounds, opset):
    model = _conv_clip_model(bounds, opset)
    imported = import_onnx(model)
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32) * 3
    feeds = {"x": x}
    (want,) = run_onnxruntime(model, feeds)
    (got,) = run_tvm(imported, feeds)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    text = imported.mod["main"].script()
    if bounds != "tensor bound":
        assert "call_tir" not in text
        assert ("R.maximum" in text) == (bounds == "relu6")  # no low bound, or a NaN one
        assert "R.minimum" in text


def test_relu6_after_an_nhwc_conv_needs_no_transpose():
    converted = to_channels_last(import_onnx(_conv_clip_model("relu6")))
    text = converted.mod["main"].script()
    assert text.count("R.permute_dims") == 2  # the input in, the output out
    assert "R.maximum" in text and "R.minimum" in text
