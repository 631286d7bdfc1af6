"""BatchNormalization folded into the Conv/Gemm before it: same outputs, zeros kept."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from sparse_tvm.frontend.fold_batchnorm import fold_batchnorm
from sparse_tvm.frontend.initializers import read_initializer
from tests.conftest import ort_run, random_inputs, sparse_array

SIZE = 6  # spatial size of the test images


def _bn_params(rng: np.random.Generator, channels: int, name: str) -> list[onnx.TensorProto]:
    values = {
        "scale": rng.uniform(0.5, 1.5, channels),
        "B": 0.5 * rng.standard_normal(channels),
        "mean": 0.5 * rng.standard_normal(channels),
        "var": rng.uniform(0.5, 1.5, channels),
    }
    return [numpy_helper.from_array(v.astype(np.float32), f"{name}.{k}") for k, v in values.items()]


def _batchnorm(x: str, y: str, name: str = "bn", eps: float = 1e-5) -> onnx.NodeProto:
    inputs = [x] + [f"{name}.{k}" for k in ("scale", "B", "mean", "var")]
    return helper.make_node("BatchNormalization", inputs, [y], name=name, epsilon=eps)


def _model(nodes, inits, inputs, outputs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _value(name: str, shape) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def conv_bn_model(
    cin: int,
    cout: int,
    kernel: int = 3,
    group: int = 1,
    bias: bool = False,
    eps: float = 1e-5,
    seed: int = 0,
    extra_use: bool = False,
) -> onnx.ModelProto:
    """x -> Conv 'conv' (sparse weight) -> BatchNormalization 'bn' -> y; with ``extra_use``
    the Conv's output also feeds a second graph output through a Relu."""
    rng = np.random.default_rng(seed)
    weight = sparse_array((cout, cin // group, kernel, kernel), seed=seed, density=0.5)
    inits = [numpy_helper.from_array(weight, "conv.weight")]
    conv_inputs = ["x", "conv.weight"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(cout).astype("f4"), "conv.b"))
        conv_inputs.append("conv.b")
    conv = helper.make_node(
        "Conv", conv_inputs, ["c"], name="conv", group=group, pads=[kernel // 2] * 4
    )
    helper.set_metadata_props(conv, {"namespace": "layer.conv"})
    nodes = [conv, _batchnorm("c", "y", eps=eps)]
    outputs = [_value("y", [1, cout, SIZE, SIZE])]
    if extra_use:
        nodes.append(helper.make_node("Relu", ["c"], ["r"], name="relu"))
        outputs.append(_value("r", [1, cout, SIZE, SIZE]))
    inputs = [_value("x", [1, cin, SIZE, SIZE])]
    return _model(nodes, inits + _bn_params(rng, cout, "bn"), inputs, outputs)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def _assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto) -> None:
    feeds = random_inputs(before)
    for want, got in zip(ort_run(before, feeds), ort_run(after, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))


@st.composite
def conv_cases(draw) -> dict:
    kind = draw(st.sampled_from(["dense", "grouped", "depthwise"]))
    if kind == "depthwise":
        cin = draw(st.integers(1, 8))
        group, cout = cin, cin * draw(st.integers(1, 2))
    elif kind == "grouped":
        group = draw(st.integers(2, 3))
        cin, cout = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 3))
    else:
        group, cin, cout = 1, draw(st.integers(1, 8)), draw(st.integers(1, 16))
    return {
        "cin": cin,
        "cout": cout,
        "group": group,
        "kernel": draw(st.sampled_from([1, 3, 5])),
        "bias": draw(st.booleans()),
        "eps": draw(st.sampled_from([1e-5, 1e-3, 0.1])),
        "seed": draw(st.integers(0, 2**16)),
    }


@settings(max_examples=40, deadline=None)
@given(conv_cases())
def test_conv_batchnorm_folds_to_the_same_outputs(case):
    model = conv_bn_model(**case)
    original = model.SerializeToString()
    folded = fold_batchnorm(model)
    assert model.SerializeToString() == original  # the input is untouched
    onnx.checker.check_model(folded)
    assert _ops(folded) == ["Conv"]
    _assert_same_outputs(model, folded)

    weight, new = read_initializer(model, "conv.weight"), read_initializer(folded, "conv.weight")
    assert new.dtype == np.float32
    np.testing.assert_array_equal(new == 0, weight == 0)  # sparsity kept (scales are nonzero)
    assert not np.signbit(new[weight == 0]).any()  # exactly +0, not -0
    conv = folded.graph.node[0]
    assert conv.name == "conv" and conv.output[0] == "y"
    assert {p.key: p.value for p in conv.metadata_props} == {"namespace": "layer.conv"}


def test_initializers_new_bias_after_weight_and_batchnorm_params_dropped():
    folded = fold_batchnorm(conv_bn_model(4, 8))
    assert [t.name for t in folded.graph.initializer] == ["conv.weight", "conv.bias"]
    assert all(t.data_type == TensorProto.FLOAT for t in folded.graph.initializer)
    assert list(folded.graph.node[0].input) == ["x", "conv.weight", "conv.bias"]

    with_bias = fold_batchnorm(conv_bn_model(4, 8, bias=True))
    assert [t.name for t in with_bias.graph.initializer] == ["conv.weight", "conv.b"]


def test_conv_output_with_two_consumers_is_left_alone():
    model = conv_bn_model(4, 8, extra_use=True)
    folded = fold_batchnorm(model)
    assert folded is not model
    assert folded.SerializeToString() == model.SerializeToString()


def test_conv_output_that_is_a_graph_output_is_left_alone():
    model = conv_bn_model(4, 8)
    model.graph.output.append(_value("c", [1, 8, SIZE, SIZE]))
    assert _ops(fold_batchnorm(model)) == ["Conv", "BatchNormalization"]


def test_shared_weight_is_left_alone():
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c1"], name="conv1"),
        helper.make_node("Conv", ["x", "w"], ["c2"], name="conv2"),
        _batchnorm("c1", "y"),
        helper.make_node("Add", ["y", "c2"], ["z"]),
    ]
    inits = [numpy_helper.from_array(rng.standard_normal((3, 2, 1, 1)).astype("f4"), "w")]
    model = _model(
        nodes,
        inits + _bn_params(rng, 3, "bn"),
        [_value("x", [1, 2, SIZE, SIZE])],
        [_value("z", [1, 3, SIZE, SIZE])],
    )
    assert "BatchNormalization" in _ops(fold_batchnorm(model))


def test_batchnorm_in_training_mode_is_left_alone():
    model = conv_bn_model(4, 8)
    model.graph.node[1].attribute.append(helper.make_attribute("training_mode", 1))
    assert "BatchNormalization" in _ops(fold_batchnorm(model))


def _linear_bn_model(op: str, trans_b: int, bias: bool, beta: float) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    k, n = 6, 5
    w = sparse_array((n, k) if trans_b else (k, n), seed=1, density=0.5)
    inits = [numpy_helper.from_array(w, "fc.weight")]
    inputs = ["x", "fc.weight"]
    attrs = {"transB": trans_b, "beta": beta} if op == "Gemm" else {}
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal((1, n)).astype("f4"), "fc.b"))
        inputs.append("fc.b")
    nodes = [helper.make_node(op, inputs, ["h"], name="fc", **attrs), _batchnorm("h", "y")]
    return _model(
        nodes, inits + _bn_params(rng, n, "bn"), [_value("x", [3, k])], [_value("y", [3, n])]
    )


@settings(max_examples=12, deadline=None)
@given(st.sampled_from([0, 1]), st.booleans(), st.sampled_from([1.0, 0.5]))
def test_gemm_batchnorm_folds(trans_b, bias, beta):
    model = _linear_bn_model("Gemm", trans_b, bias, beta)
    folded = fold_batchnorm(model)
    onnx.checker.check_model(folded)
    assert _ops(folded) == ["Gemm"]
    _assert_same_outputs(model, folded)
    weight, new = read_initializer(model, "fc.weight"), read_initializer(folded, "fc.weight")
    np.testing.assert_array_equal(new == 0, weight == 0)


def test_matmul_batchnorm_is_left_alone():
    model = _linear_bn_model("MatMul", 0, False, 1.0)
    assert _ops(fold_batchnorm(model)) == ["MatMul", "BatchNormalization"]
