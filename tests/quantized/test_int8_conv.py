"""A quantized CNN's channels-first convs on the CPU int8 kernel (through the 8-bit im2col,
transform/int8_lowering.py), against onnxruntime running the same QDQ model."""

from __future__ import annotations

import numpy as np
import pytest

import sparse_tvm as st
from sparse_tvm.examples import small_cnn
from sparse_tvm.runtime.onnxruntime_reference import reference_session
from tests.conftest import avx2

from .models import output_step


def _quantize(model, shape):
    calib = {model.graph.input[0].name: np.random.default_rng(0).random(shape).astype(np.float32)}
    return st.quantize(model, calib, per_channel=True)


def _quantized_cnn(pattern: str = "16x4", batch: int = 1):
    """The small CNN; channels-first at batch 1, channels-last at 2 (the NCHW depthwise
    kernel takes one image)."""
    model = small_cnn(batch=batch, size=8)
    pruned = st.prune(model, 0.9, pattern, unstructured_below=0).model  # small convs in blocks
    return _quantize(pruned, (16, 3, 8, 8))


def two_convs(batch: int):
    """A 3x3 conv (4 -> 32, padded, stride 2) and a 1x1 conv (32 -> 32), ReLUs, global
    average pool and a Gemm; no depthwise conv, so channels-first at any batch."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1] * 4, strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["y"], transB=1),
    ]
    inits = [
        init("w1", 32, 4, 3, 3), init("b1", 32), init("w2", 32, 32, 1, 1), init("b2", 32),
        init("w3", 16, 32), init("b3", 16),
    ]  # fmt: skip
    graph = helper.make_graph(
        nodes, "two_convs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 16])], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    pruned = st.prune(model, 0.9, "16x4", unstructured_below=0).model  # small convs in blocks
    return _quantize(pruned, (8, 4, 9, 9))


@avx2
@pytest.mark.parametrize("batch", [1, 3])
def test_strided_convs_of_several_images_run_int8_as_onnxruntime(batch):
    """The kernel's rows are the pixels of every image; a stride-2 padded conv's im2col."""
    q = two_convs(batch)
    compiled = st.compile(q, "x86-avx2", measure=False)
    formats = [row.format for row in compiled.report.layers]
    assert formats == ["int8 bsr 16x4"] * 3, formats
    x = np.random.default_rng(5).random((batch, 4, 9, 9)).astype(np.float32)
    want = reference_session(q).run(None, {"x": x})[0]
    got = np.asarray(compiled.run({"x": x})[0])
    assert np.abs(got - want).max() <= output_step(q) * 1.001


@avx2
@pytest.mark.parametrize("batch", [1, 2], ids=["channels-first", "channels-last"])
def test_quantized_cnn_runs_its_convs_int8_as_onnxruntime(batch):
    q = _quantized_cnn(batch=batch)
    name = q.graph.input[0].name
    shape = (batch, 3, 8, 8)
    compiled = st.compile(q, "x86-avx2", measure=False)
    formats = {row.name: row.format for row in compiled.report.layers}
    # the 3x3 conv of 32 channels and the 1x1 convs (k a multiple of 4, n of 16); the first
    # conv (k = 27), the depthwise conv and the 10-class Gemm keep the float path
    int8 = {n for n, f in formats.items() if f == "int8 bsr 16x4"}
    expected = {"conv2.weight", "conv4.weight"}
    if batch == 1:  # channels-last, the 3x3 conv's 16x4 blocks run over (tap, channel), not
        # the (channel, tap) order pruned: few of them are zero, and it stays float
        expected.add("conv3.weight")
    assert expected <= int8, formats
    assert "int8" not in formats["conv1.weight"] and "int8" not in formats["dwconv.weight"]

    x = np.random.default_rng(5).random(shape).astype(np.float32)
    want = reference_session(q).run(None, {name: x})[0]
    got = np.asarray(compiled.run({name: x})[0])
    # the first conv's float sums may round a step the other way now and then
    assert np.abs(got - want).max() <= 2 * output_step(q), np.abs(got - want).max()
    assert np.abs(got - want).mean() <= 0.05 * output_step(q)


@avx2
def test_few_zero_blocks_keep_the_float_conv():
    """4x1-pruned weights leave most 16x4 blocks non-zero: the untimed rule keeps float."""
    q = _quantized_cnn("4x1")
    compiled = st.compile(q, "x86-avx2", measure=False)
    assert all("int8" not in row.format for row in compiled.report.layers if row.op == "conv2d")


@avx2
def test_timed_conv_decision_builds_the_conv_from_its_8bit_input():
    """The decision times the int8 conv against the float conv, each built alone from the
    same 8-bit input with the layer's QDQ ops (decision/int8_decision.py)."""
    from sparse_tvm.analysis import analyse
    from sparse_tvm.decision.int8_decision import quantized_layer_module
    from sparse_tvm.frontend import import_onnx

    q = two_convs(1)
    conv = next(layer for layer in analyse(import_onnx(q)) if layer.op == "conv2d")
    _, _, single = quantized_layer_module(conv)
    assert single.op == "conv2d" and single.conv == conv.conv and single.int8 is not None
    assert single.fused == conv.fused and single.int8.out_scale == conv.int8.out_scale
    np.testing.assert_array_equal(single.int8.weight, conv.int8.weight)

    compiled = st.compile(q, "x86-avx2")  # measured
    rows = [row for row in compiled.report.layers if row.op == "conv2d"]
    assert all("measured" in row.reason and "int8 bsr 16x4" in row.reason for row in rows)
    x = np.random.default_rng(2).random((1, 4, 9, 9)).astype(np.float32)
    want = reference_session(q).run(None, {"x": x})[0]
    assert np.abs(np.asarray(compiled.run({"x": x})[0]) - want).max() <= 2 * output_step(q)
